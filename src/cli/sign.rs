//! `sign`: ed25519 signature over a model's manifest (`manifest.toml.sig`), and key pairs.
//!
//! The manifest holds the model file's sha256, so signing it covers the model. A board whose
//! profile sets `[model] public_key` refuses a model whose signature does not verify.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::model::{MANIFEST_FILE, Manifest, SIGNATURE_FILE, public_key, sign_manifest, verify_manifest_signature};

#[derive(clap::Args)]
pub struct Args {
    /// Secret key file (64 hex digits) to sign with.
    #[arg(long, value_name = "KEYFILE", conflicts_with = "generate")]
    key: Option<PathBuf>,
    /// Make a new key pair: the secret key goes to KEYFILE (mode 0600, must not exist), the
    /// public key to KEYFILE.pub and stdout. Signs MODEL_DIR too when one is given.
    #[arg(long, value_name = "KEYFILE")]
    generate: Option<PathBuf>,
    /// Model directory whose manifest.toml to sign.
    model_dir: Option<PathBuf>,
}

/// Reads a secret key file: 64 hex digits.
pub fn read_secret_key(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|e| anyhow::anyhow!("key file {} must hold 64 hex digits: {e}", path.display()))?;
    Ok(key)
}

/// Writes a new secret key to `path` (created, never overwritten) and returns it.
pub fn generate_key(path: &Path) -> Result<[u8; 32]> {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create key file {}", path.display()))?;
    writeln!(file, "{}", hex::encode(secret)).with_context(|| format!("cannot write key file {}", path.display()))?;
    file.sync_all()?;
    let public = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.pub", ext.to_string_lossy()),
        None => "pub".into(),
    });
    std::fs::write(&public, format!("{}\n", hex::encode(public_key(&secret))))
        .with_context(|| format!("cannot write public key {}", public.display()))?;
    Ok(secret)
}

/// Signs `dir/manifest.toml` (which must be a valid manifest) into `dir/manifest.toml.sig`.
pub fn sign_model_dir(dir: &Path, secret: &[u8; 32]) -> Result<PathBuf> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&manifest_path)
        .with_context(|| format!("cannot read model manifest {}", manifest_path.display()))?;
    Manifest::parse(&bytes, &manifest_path)?;
    let sig_path = dir.join(SIGNATURE_FILE);
    let tmp = dir.join(format!("{SIGNATURE_FILE}.tmp"));
    std::fs::write(&tmp, sign_manifest(&bytes, secret)).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &sig_path).with_context(|| format!("cannot write {}", sig_path.display()))?;
    verify_manifest_signature(dir, &bytes, &public_key(secret))?;
    Ok(sig_path)
}

pub fn run(args: Args) -> Result<()> {
    let secret = match (&args.generate, &args.key) {
        (Some(path), _) => {
            let secret = generate_key(path)?;
            println!("secret key written to {} (keep it off the boards)", path.display());
            secret
        }
        (None, Some(path)) => read_secret_key(path)?,
        (None, None) => bail!("give --key KEYFILE to sign, or --generate KEYFILE to make a key pair"),
    };
    let public = hex::encode(public_key(&secret));
    match &args.model_dir {
        Some(dir) => {
            let sig = sign_model_dir(dir, &secret)?;
            println!("signed {} -> {}", dir.join(MANIFEST_FILE).display(), sig.display());
        }
        None if args.generate.is_none() => bail!("give the model directory to sign"),
        None => {}
    }
    println!("board profile: [model] public_key = \"{public}\"");
    Ok(())
}
