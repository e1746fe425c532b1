//! `pkcv-proxy keygen`: an RSA key pair for PKCV; the public half printed for upload.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pkcv_proxy::keygen;

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the key pair.
    #[arg(long)]
    out_dir: PathBuf,
    /// Modulus size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    bits: u32,
    /// File name prefix: NAME-private.pem and NAME-public.pem.
    #[arg(long, default_value = "pkcv")]
    name: String,
}

pub(crate) fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = keygen::generate(args.bits)?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let private = args.out_dir.join(format!("{}-private.pem", args.name));
    let public = args.out_dir.join(format!("{}-public.pem", args.name));
    if public.exists() {
        anyhow::bail!(
            "{} exists: refusing to overwrite a key pair",
            public.display()
        );
    }
    keygen::write_new_private(&private, &key.private_pem)?;
    std::fs::write(&public, &key.public_pem)
        .with_context(|| format!("writing {}", public.display()))?;
    eprintln!("private key: {} (0600, PKCS#8)", private.display());
    eprintln!("public key:  {} (upload it to Twilio: Console, or POST https://accounts.twilio.com/v1/Credentials/PublicKeys)", public.display());
    print!("{}", key.public_pem);
    Ok(ExitCode::SUCCESS)
}
