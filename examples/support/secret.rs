//! The secret of an example whose approvals outlive a restart, kept as a deployment keeps one.

use std::path::Path;

use tollgate::BoxError;

/// `TOLLGATE_SECRET`, or a random secret made on the first run and kept in the file at `path`,
/// readable only by its owner. Codes and the seals on stored rules are derived from it, so rules
/// stored by an earlier run are honoured only under the same secret: a per-process secret
/// (`random_secret`) would have them refused as `rule_rejected`.
pub(crate) fn kept_secret(path: &Path) -> Result<Vec<u8>, BoxError> {
    if let Ok(secret) = std::env::var("TOLLGATE_SECRET") {
        return Ok(secret.into_bytes());
    }
    if let Ok(secret) = std::fs::read(path) {
        return Ok(secret);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = (options.write(true).create_new(true).open(path))
        .map_err(|e| format!("cannot keep the secret in {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, &secret)?;
    Ok(secret.to_vec())
}
