pub fn test() -> anyhow::Result<()> {
    anyhow::bail!("VM tier not written yet")
}
