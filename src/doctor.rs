//! TEMPORARY STUB (replaced by the helper's module)
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub kernel: String,
}
impl Report {
    pub fn usable(&self) -> bool {
        true
    }
}
pub fn probe() -> Report {
    Report {
        kernel: String::new(),
    }
}
pub fn render(_r: &Report, _o: &mut dyn std::io::Write) -> std::io::Result<()> {
    Ok(())
}
