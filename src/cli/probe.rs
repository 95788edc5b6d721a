//! `probe`: list capture devices with their formats and sizes.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Directory holding the video device nodes.
    #[arg(long, default_value = "/dev")]
    dev: std::path::PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        for line in crate::capture::v4l2::probe(&args.dev)? {
            println!("{line}");
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = args;
        anyhow::bail!("probe needs Linux (V4L2)")
    }
}
