//! Throwaway certificates for the scale-out services' TLS tests, made with
//! the `openssl` command: a CA, and a certificate for 127.0.0.1 it signed.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Makes a CA (`ca.crt`, `ca.key`) in `dir` and a certificate for
/// 127.0.0.1 signed by it (`server.crt`, `server.key`); returns the CA's
/// certificate.
pub fn make_certificates(dir: &Path) -> PathBuf {
    let ca_cert = make_ca(dir, "mirage-test-ca");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("writing the certificate's extensions");
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "making the server's key",
    );
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.crt",
        "signing the server's certificate",
    );
    // PostgreSQL refuses a key that others may read.
    std::fs::set_permissions(dir.join("server.key"), PermissionsExt::from_mode(0o600))
        .expect("restricting the server's key");
    ca_cert
}

/// A new CA in `dir` (`ca.crt`, `ca.key`), its name `/CN=<id>`; returns its
/// certificate.
pub fn make_ca(dir: &Path, id: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("a directory for certificates");
    let args = format!(
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN={id}"
    );
    openssl(dir, &args, "making a CA");
    dir.join("ca.crt")
}

/// Runs `openssl` with `args` (split at spaces) in `dir`.
fn openssl(dir: &Path, args: &str, what: &str) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: running openssl: {e}"));
    assert!(
        output.status.success(),
        "{what}: openssl {args} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts that a server with `config` does not start, for a certificate
/// that does not verify.
pub async fn assert_refused_for_its_certificate(config: mirage::Config) {
    let refused = mirage::App::build(config)
        .await
        .err()
        .expect("a certificate from an unknown CA is refused");
    let message = format!("{refused:#}");
    assert!(message.contains("certificate"), "{message}");
}
