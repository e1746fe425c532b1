//! `pkcv-proxy keygen`: an RSA key pair for PKCV, as PEM files or inside an HSM; the public
//! half printed for upload.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pkcv_proxy::keygen;
use pkcv_proxy::pkcs11::Pkcs11Uri;

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the key pair (with --pkcs11: only the public key).
    #[arg(long)]
    out_dir: PathBuf,
    /// Modulus size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    bits: u32,
    /// File name prefix: NAME-private.pem and NAME-public.pem.
    #[arg(long, default_value = "pkcv", conflicts_with = "pkcs11")]
    name: String,
    /// Generate the key pair inside the token this PKCS#11 URI names (its object= is the
    /// label; the private key is created sensitive and non-extractable). Module and PIN come
    /// from the URI's module-path and pin-source, or from --config's [pkcs11].
    #[arg(long, value_name = "URI", value_parser = pkcv_proxy::pkcs11::uri::parse_boxed)]
    pkcs11: Option<Box<Pkcs11Uri>>,
}

pub(crate) fn run(config_path: Option<&Path>, args: KeygenArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    if let Some(uri) = &args.pkcs11 {
        return in_token(config_path, uri, &args);
    }
    let key = keygen::generate(args.bits)?;
    let private = args.out_dir.join(format!("{}-private.pem", args.name));
    let public = public_file(&args.out_dir, &args.name)?;
    keygen::write_new_private(&private, &key.private_pem)?;
    write_public(&public, &key.public_pem)?;
    eprintln!("private key: {} (0600, PKCS#8)", private.display());
    Ok(ExitCode::SUCCESS)
}

/// The key pair made in the HSM: nothing secret is written, only the public key.
fn in_token(
    config_path: Option<&Path>,
    uri: &Pkcs11Uri,
    args: &KeygenArgs,
) -> anyhow::Result<ExitCode> {
    let Some(label) = &uri.object else {
        anyhow::bail!("{uri} names no label: add object=LABEL");
    };
    let config = pkcv_proxy::Config::load(config_path)?;
    let public = public_file(&args.out_dir, label)?;
    let public_pem = pkcv_proxy::pkcs11::keygen::generate(uri, &config.pkcs11, args.bits)?;
    write_public(&public, &public_pem)?;
    eprintln!("private key: inside the token, {uri} (sensitive, non-extractable)");
    eprintln!("use it with:  private_key = \"{uri}\"");
    Ok(ExitCode::SUCCESS)
}

fn public_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    // The label becomes a file name: nothing that walks out of the directory.
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        anyhow::bail!(
            "{name:?} cannot be a file name: choose a label without '/' or a leading '.'"
        );
    }
    let public = dir.join(format!("{name}-public.pem"));
    if public.exists() {
        anyhow::bail!(
            "{} exists: refusing to overwrite a key pair",
            public.display()
        );
    }
    Ok(public)
}

fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("public key:  {} (upload it to Twilio: Console, or POST https://accounts.twilio.com/v1/Credentials/PublicKeys)", path.display());
    print!("{pem}");
    Ok(())
}
