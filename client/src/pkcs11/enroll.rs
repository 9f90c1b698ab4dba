//! `virtgate enroll USER --key pkcs11:token=…;object=… [--pkcs11-module M]`: the key is
//! made on the token (EC P-256, sensitive, never extractable) unless one with that label
//! is there already, and the certificate request is signed by the token. Only the request
//! is written (`DIR/USER.csr`, DIR as for a key file); what comes next is printed, with
//! the `profile add` line that names the token and its module.

use std::path::Path;

use crate::cli::GlobalArgs;
use crate::cmd::enroll::{write_request, EnrollArgs, Place};
use crate::error::{Error, SetupFailure};
use crate::passphrase::PassphraseSources;
use crate::profile::Env;

/// Run `virtgate enroll` for a key on a token; `uri` is the `--key` given.
pub fn run(global: &GlobalArgs, args: &EnrollArgs, env: &Env, uri: &Path) -> Result<(), Error> {
    // where the request goes: as for a key file, DIR/USER.csr (the key itself is the URI)
    let place = Place::resolve(&args.user, args.dir.as_deref(), None, env)?;
    if std::fs::symlink_metadata(&place.csr).is_ok() {
        return Err(SetupFailure::RequestExists {
            path: place.csr.clone(),
        }
        .into());
    }
    if let Some(folder) = place.csr.parent().filter(|p| !p.as_os_str().is_empty()) {
        virtgate_pki::files::create_dir(folder).map_err(|source| SetupFailure::Write {
            path: folder.to_owned(),
            source,
        })?;
    }
    let pin = PassphraseSources {
        file: global.passphrase_file.clone(),
        env: env
            .key_passphrase
            .as_ref()
            .map(|v| zeroize::Zeroizing::new(v.to_string_lossy().into_owned())),
        ..Default::default()
    };
    let key = super::enroll_key(uri, global.pkcs11_module.as_deref(), &pin)?;
    let made = match key.generated {
        true => "made",
        false => "found",
    };
    println!(
        "{made} {} on token \"{}\": your private key; it never leaves the token",
        key.described, key.token
    );
    let info = write_request(&args.user, &key.key, &place.csr)?;
    let module = super::module_for(&super::parse_uri(uri)?, global.pkcs11_module.as_deref())?;
    let user = &args.user;
    print!(
        "wrote {csr} (the certificate request for `{user}`; no secret in it)\n\
         \n\
         public key {kind}, SHA-256 fingerprint:\n  {fp}\n\
         \n\
         Next:\n\
         1. Send {csr} to the admin of the gateway, and tell them the fingerprint above\n   \
            another way (phone, in person) so they can check the request is yours.\n\
         2. The admin signs it and sends back {user}.pem and the CA certificate ca.pem.\n\
         3. Then add the gateway as a profile:\n     \
              virtgate profile add NAME --url virtgate://HOST --ca ca.pem --cert {user}.pem \\\n       \
              --key '{uri}' --pkcs11-module {module}\n",
        csr = place.csr.display(),
        kind = info.key_kind,
        fp = info.fingerprint(),
        uri = uri.display(),
        module = module.display(),
    );
    Ok(())
}
