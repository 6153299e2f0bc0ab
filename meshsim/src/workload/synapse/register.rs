//! The test user of a node, made with the run's registration secret through Synapse's
//! shared-secret registration API (`/_synapse/admin/v1/register`), from inside the node.

use std::time::Duration;

use hmac::{Hmac, Mac as _};
use hyper::Method;
use serde_json::json;
use sha1::Sha1;

use crate::workload::http::NodeHttp;

const REGISTER: &str = "/_synapse/admin/v1/register";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Makes `@user:<node>` with `password`, not an admin. A user that exists already (a node
/// added again keeps its database) is fine.
pub async fn test_user(
    http: &mut NodeHttp,
    secret: &str,
    user: &str,
    password: &str,
) -> Result<(), String> {
    let nonce = http
        .get(REGISTER, None, TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let Some(nonce) = nonce.body.get("nonce").and_then(|n| n.as_str()) else {
        return Err(format!("no nonce from {REGISTER}: {}", nonce.describe()));
    };
    let body = json!({
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": false,
        "mac": registration_mac(secret, nonce, user, password),
    });
    let answer = http
        .request(Method::POST, REGISTER, None, Some(&body), TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if answer.ok() || answer.errcode() == Some("M_USER_IN_USE") {
        Ok(())
    } else {
        Err(format!("{REGISTER} refused: {}", answer.describe()))
    }
}

/// HMAC-SHA1 of `nonce \0 user \0 password \0 notadmin` under the shared secret, in hex,
/// as Synapse's admin API documents it.
fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    for (i, part) in [nonce, user, password, "notadmin"].iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_hmac_sha1_of_the_nul_joined_parts() {
        // Python's `hmac.new(b"Jefe", b"abc\0meshsim\0secret pw\0notadmin", sha1)`.
        assert_eq!(
            registration_mac("Jefe", "abc", "meshsim", "secret pw"),
            "fbb806087dd519bfa5077d43da8d573bed43c4ae"
        );
    }
}
