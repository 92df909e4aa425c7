//! AWS Signature Version 4, the part the Query APIs use: a request's method, path,
//! query, headers and body hashed into a canonical request, signed with a key derived
//! from the secret, the date, the region and the service. Pure code, no I/O, so it is
//! checked against AWS's own documented example and then, in the tests, by moto
//! validating every request it receives.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use super::credentials::Credentials;

type HmacSha256 = Hmac<Sha256>;

/// What a request is made of, as sent.
pub struct Request<'a> {
    pub method: &'a str,
    /// The `Host` header's value: the host, and `:port` when it is not the scheme's.
    pub host: &'a str,
    /// The absolute path (`/` for the Query APIs).
    pub path: &'a str,
    /// The query string, already in canonical form (sorted, RFC 3986 encoded).
    pub query: &'a str,
    /// Headers signed besides `host`, `x-amz-date` and `x-amz-security-token`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers to add to the request: `x-amz-date`, `x-amz-security-token` (with
/// temporary credentials) and `authorization`.
#[must_use]
pub fn sign(
    request: &Request<'_>,
    service: &str,
    region: &str,
    credentials: &Credentials,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = now.format("%Y%m%d").to_string();
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    headers.push(("host".into(), request.host.to_owned()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical_headers = String::new();
    for (k, v) in &headers {
        canonical_headers.push_str(k);
        canonical_headers.push(':');
        canonical_headers.push_str(v);
        canonical_headers.push('\n');
    }
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        request.method,
        request.path,
        request.query,
        hex::encode(Sha256::digest(request.body))
    );
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        day.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    let mut out = vec![("x-amz-date", amz_date)];
    if let Some(token) = &credentials.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `name=value` pairs as a canonical query or form body: sorted by name, each part
/// percent-encoded except RFC 3986's unreserved characters (what `SigV4` requires of
/// the query and what the Query APIs accept as a form body).
#[must_use]
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> =
        pairs.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's worked example ("Create a signed AWS API request", IAM `ListUsers` on
    /// 2015-08-30 with the documentation's example key): the signature it documents.
    #[test]
    fn the_documented_example_signs_as_aws_says() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires: None,
        };
        let now = DateTime::parse_from_rfc3339("2015-08-30T12:36:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let headers = sign(
            &Request {
                method: "GET",
                host: "iam.amazonaws.com",
                path: "/",
                query: &canonical_query(&[
                    ("Version".into(), "2010-05-08".into()),
                    ("Action".into(), "ListUsers".into()),
                ]),
                headers: &[(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body: b"",
            },
            "iam",
            "us-east-1",
            &credentials,
            now,
        );
        assert_eq!(headers[0], ("x-amz-date", "20150830T123600Z".to_owned()));
        assert_eq!(
            headers[1].1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token/+=".into()),
            expires: None,
        };
        let headers = sign(
            &Request {
                method: "POST",
                host: "127.0.0.1:5000",
                path: "/",
                query: "",
                headers: &[],
                body: b"Action=DescribeInstances",
            },
            "ec2",
            "eu-west-1",
            &credentials,
            Utc::now(),
        );
        assert_eq!(headers[1], ("x-amz-security-token", "token/+=".to_owned()));
        assert!(
            headers[2]
                .1
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,")
        );
    }

    #[test]
    fn queries_are_sorted_and_encoded_as_sigv4_requires() {
        let q = canonical_query(&[
            ("NextToken".into(), "a b/c+=~".into()),
            ("Action".into(), "DescribeInstances".into()),
            ("Filter.1.Name".into(), "é".into()),
        ]);
        assert_eq!(
            q,
            "Action=DescribeInstances&Filter.1.Name=%C3%A9&NextToken=a%20b%2Fc%2B%3D~"
        );
    }
}
