//! Flame graphs of waits: folded stacks (`frame;frame;... weight`, the
//! format of Brendan Gregg's flamegraph.pl and inferno) and a small,
//! self-contained SVG writer, weighted by wait time in ns.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::model::Row;

/// One folded stack: frames from the root (process) to the leaf (the lock),
/// and its weight (ns waited).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folded {
    pub frames: Vec<String>,
    pub weight: u64,
}

/// Folds the rows' stacks: process name, user frames (outermost first),
/// kernel frames (outermost first), then the lock kind and name; weighted
/// by wait time.
pub fn fold(rows: &[Row]) -> Vec<Folded> {
    fold_by(rows, |s| s.total_ns)
}

/// The same folding weighted by hold time: the stack of each acquisition
/// (`--hold-stacks`) and the holds that followed it.
pub fn fold_holds(rows: &[Row]) -> Vec<Folded> {
    fold_by(rows, |s| s.hold_total_ns)
}

fn fold_by(rows: &[Row], weight: impl Fn(&crate::model::StackSample) -> u64) -> Vec<Folded> {
    let mut out = Vec::new();
    for r in rows {
        let leaf = format!(
            "[{} {}]",
            r.kind.map(|k| k.name()).unwrap_or_else(|| "lock".into()),
            r.lock_name
                .clone()
                .or_else(|| r.lock.clone())
                .unwrap_or_default()
        );
        for st in r.stacks.iter().filter(|s| weight(s) > 0) {
            // the thread, else (rows of several threads) the process
            let root = r
                .comm
                .clone()
                .or_else(|| r.pid.map(|p| format!("pid {p}")))
                .unwrap_or_else(|| "?".into());
            let mut frames = vec![root];
            frames.extend(st.user.iter().rev().cloned());
            frames.extend(st.kernel.iter().rev().cloned());
            frames.push(leaf.clone());
            out.push(Folded {
                frames,
                weight: weight(st),
            });
        }
    }
    out
}

/// Writes folded stacks, one per line (`;` inside a frame becomes `:`).
pub fn write_folded(w: &mut dyn Write, stacks: &[Folded]) -> io::Result<()> {
    for s in stacks {
        let frames: Vec<String> = s.frames.iter().map(|f| f.replace(';', ":")).collect();
        writeln!(w, "{} {}", frames.join(";"), s.weight)?;
    }
    Ok(())
}

#[derive(Default)]
struct Node {
    value: u64,
    children: BTreeMap<String, Node>,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A stable warm colour per frame name.
fn colour(name: &str) -> String {
    let h = name
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    let r = 200 + (h % 55);
    let g = 60 + ((h >> 8) % 140);
    let b = (h >> 16) % 50;
    format!("rgb({r},{g},{b})")
}

const WIDTH: f64 = 1200.0;
const PAD: f64 = 10.0;
const ROW: f64 = 16.0;

/// Writes an SVG flame graph (root at the bottom), each frame a `<g>` with
/// a `<title>` tooltip giving its weight and share.
pub fn write_svg(w: &mut dyn Write, stacks: &[Folded], title: &str) -> io::Result<()> {
    write_svg_of(w, stacks, title, "waited")
}

/// [`write_svg`] whose tooltips say what the weight is ("held").
pub fn write_svg_of(
    w: &mut dyn Write,
    stacks: &[Folded],
    title: &str,
    what: &str,
) -> io::Result<()> {
    let mut root = Node::default();
    let mut depth = 0;
    for s in stacks {
        root.value += s.weight;
        let mut n = &mut root;
        for f in &s.frames {
            n = n.children.entry(f.clone()).or_default();
            n.value += s.weight;
        }
        depth = depth.max(s.frames.len());
    }
    let height = (depth as f64 + 3.0) * ROW + 2.0 * PAD;
    writeln!(
        w,
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="monospace" font-size="11">
<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="rgb(250,250,240)"/>
<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        PAD + 12.0,
        xml_escape(title)
    )?;
    if root.value == 0 {
        writeln!(
            w,
            r#"<text x="{}" y="{}" text-anchor="middle">no stacks recorded</text>"#,
            WIDTH / 2.0,
            PAD + 40.0
        )?;
        return writeln!(w, "</svg>");
    }
    let scale = (WIDTH - 2.0 * PAD) / root.value as f64;
    let total = root.value;
    let mut stack: Vec<(&String, &Node, f64, usize)> = Vec::new();
    let mut x = PAD;
    for (name, child) in &root.children {
        stack.push((name, child, x, 0));
        x += child.value as f64 * scale;
    }
    while let Some((name, node, x, d)) = stack.pop() {
        let width = node.value as f64 * scale;
        if width < 0.1 {
            continue;
        }
        let y = height - PAD - (d as f64 + 1.0) * ROW;
        let pct = 100.0 * node.value as f64 / total as f64;
        let label = xml_escape(name);
        let chars = ((width - 4.0) / 7.0).max(0.0) as usize;
        let text: String = if name.chars().count() <= chars {
            label.clone()
        } else if chars > 2 {
            let cut: String = name.chars().take(chars - 2).collect();
            format!("{}..", xml_escape(&cut))
        } else {
            String::new()
        };
        writeln!(
            w,
            r#"<g><title>{label} ({} ns {what}, {pct:.2}%)</title><rect x="{x:.2}" y="{y:.2}" width="{width:.2}" height="{}" fill="{}" rx="2"/><text x="{:.2}" y="{:.2}">{text}</text></g>"#,
            node.value,
            ROW - 1.0,
            colour(name),
            x + 3.0,
            y + ROW - 4.0,
        )?;
        let mut cx = x;
        for (cname, child) in &node.children {
            stack.push((cname, child, cx, d + 1));
            cx += child.value as f64 * scale;
        }
    }
    writeln!(w, "</svg>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Folded> {
        vec![
            Folded {
                frames: vec![
                    "app".into(),
                    "main".into(),
                    "write".into(),
                    "pipe_write".into(),
                ],
                weight: 300,
            },
            Folded {
                frames: vec!["app".into(), "main".into(), "read<T>".into()],
                weight: 100,
            },
        ]
    }

    #[test]
    fn folded_lines_are_root_first_with_weights() {
        let mut out = Vec::new();
        write_folded(&mut out, &sample()).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "app;main;write;pipe_write 300\napp;main;read<T> 100\n"
        );
    }

    #[test]
    fn svg_is_well_formed_and_proportional() {
        let mut out = Vec::new();
        write_svg(&mut out, &sample(), "waits").expect("write");
        let svg = String::from_utf8(out).expect("utf8");
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<g>").count(), svg.matches("</g>").count());
        assert_eq!(
            svg.matches("<g>").count(),
            5,
            "app, main, write, pipe_write, read"
        );
        assert!(svg.contains("read&lt;T&gt;"), "escaped");
        assert!(svg.contains("pipe_write (300 ns waited, 75.00%)"));
        // the root spans the whole width
        assert!(svg.contains(r#"width="1180.00""#));
    }
}
