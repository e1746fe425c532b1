//! `pkcv-proxy keygen`: an RSA key pair for PKCV, as PEM files or inside an HSM; the public
//! half printed for upload.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use pkcv_proxy::keygen;
use pkcv_proxy::keygen::KeyCustody;
use pkcv_proxy::pkcs11::Pkcs11Uri;

use super::Outcome;

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the key pair (with --pkcs11: only the public key).
    #[arg(long)]
    out_dir: PathBuf,
    /// Modulus size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    bits: u32,
    /// File name prefix: NAME-private.pem and NAME-public.pem.
    #[arg(long, default_value = "pkcv", conflicts_with = "custody")]
    name: String,
    /// Or make the key in an HSM or a key service (only the public key is written).
    #[command(flatten)]
    custody: super::CustodyArgs,
}

pub(crate) fn run(config_path: Option<&Path>, args: KeygenArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    match args.custody.custody() {
        Some(KeyCustody::Pkcs11(uri)) => return in_token(config_path, &uri, &args),
        Some(in_service) => return in_service_key(config_path, &in_service, &args),
        None => {}
    }
    const FIX: &str = "choose another --name or --out-dir";
    let private = args.out_dir.join(format!("{}-private.pem", args.name));
    refuse_existing(&private, FIX)?;
    let public = public_file(&args.out_dir, &args.name, FIX)?;
    let key = keygen::generate(args.bits)?;
    keygen::write_new_private(&private, &key.private_pem)?;
    write_public(&public, &key.public_pem)?;
    eprintln!("private key: {} (0600, PKCS#8)", private.display());
    Ok(Outcome::Success)
}

/// The key pair made in the HSM: nothing secret is written, only the public key.
fn in_token(
    config_path: Option<&Path>,
    uri: &Pkcs11Uri,
    args: &KeygenArgs,
) -> anyhow::Result<Outcome> {
    let Some(label) = &uri.object else {
        anyhow::bail!("{uri} names no label: add object=LABEL");
    };
    // Only [pkcs11]: the account this key is for may not be complete yet.
    let settings = pkcv_proxy::Config::load_pkcs11(config_path)?;
    let public = public_file(
        &args.out_dir,
        label,
        "choose another --out-dir (the file is named after the URI's object= label)",
    )?;
    let public_pem = pkcv_proxy::pkcs11::keygen::generate(uri, &settings, args.bits)?;
    write_public(&public, &public_pem).with_context(|| {
        format!("the key pair exists in the token as {label}; its public key is printed above")
    })?;
    eprintln!("private key: inside the token, {uri} (sensitive, non-extractable)");
    eprintln!("use it with:  private_key = \"{uri}\"");
    Ok(Outcome::Success)
}

/// The key made (or found) in a key service: only the public key is written.
fn in_service_key(
    config_path: Option<&Path>,
    custody: &KeyCustody,
    args: &KeygenArgs,
) -> anyhow::Result<Outcome> {
    if args.bits != 2048 {
        anyhow::bail!("keys in a key service are RSA-2048 (Twilio's size); drop --bits");
    }
    let name = match custody {
        KeyCustody::VaultTransit(name) => name.as_str(),
        KeyCustody::AwsKms(alias) => alias.trim_start_matches("alias/"),
        KeyCustody::Pkcs11(_) => anyhow::bail!("not a key service"),
    };
    let public = public_file(
        &args.out_dir,
        name,
        "choose another --out-dir (the file is named after the key)",
    )?;
    let config = pkcv_proxy::Config::load(config_path)?;
    let made = pkcv_proxy::remote::block_on(pkcv_proxy::keygen::in_service(custody, &config))??;
    write_public(&public, &made.public_key.to_pem())?;
    eprintln!(
        "private key: {} in the key service ({}; public key {})",
        made.private_key,
        if made.created {
            "created now"
        } else {
            "it existed and is used as it is"
        },
        made.public_key.fingerprint()
    );
    eprintln!("use it with:  private_key = \"{}\"", made.private_key);
    Ok(Outcome::Success)
}

/// `NAME-public.pem` in `dir`, refused (saying `fix`) if it exists.
fn public_file(dir: &Path, name: &str, fix: &str) -> anyhow::Result<PathBuf> {
    // The label becomes a file name: nothing that walks out of the directory, nothing a file
    // system refuses once the key already exists in the token.
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        anyhow::bail!(
            "{name:?} cannot be a file name: choose a label without '/' or a leading '.'"
        );
    }
    if name.len() > 200 {
        anyhow::bail!(
            "the label is {} bytes long; keep it under 200 (it names the public key file)",
            name.len()
        );
    }
    let public = dir.join(format!("{name}-public.pem"));
    refuse_existing(&public, fix)?;
    Ok(public)
}

/// Refuses a file that exists (a dangling link too), before any key is made: a key pair is
/// never overwritten, and the message says how to write a new one beside it.
fn refuse_existing(path: &Path, fix: &str) -> anyhow::Result<()> {
    if path.symlink_metadata().is_ok() {
        anyhow::bail!(
            "{} exists: refusing to overwrite a key pair; {fix}",
            path.display()
        );
    }
    Ok(())
}

fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    print!("{pem}");
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("public key:  {} (upload it to Twilio: Console, or POST https://accounts.twilio.com/v1/Credentials/PublicKeys)", path.display());
    Ok(())
}
