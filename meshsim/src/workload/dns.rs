//! The smallest DNS server that serves the mesh: inside every node, on 127.0.0.1:53, it
//! answers A questions for node names from the run's table and says "no such name"
//! (NXDOMAIN) to everything else, at once. Nothing is forwarded: the mesh has no way out.
//!
//! Why it exists is in `names`. It is a task of meshsim's, not a process: its socket is
//! opened inside the node's network namespace and stays there, served from meshsim's runtime.
//! The format is RFC 1035's (section 4.1); queries carry one question, as every resolver
//! sends them.

use std::net::Ipv4Addr;

use tokio::net::UdpSocket;

use super::names::MeshNames;
use crate::net::{NetNs, NetNsError};

/// How long a resolver may keep an answer: short, nodes come and go.
const TTL_SECS: u32 = 5;
const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;

/// The answer to one DNS message, or `None` for what deserves none (an answer, or bytes too
/// short to carry an id). `lookup` resolves a node name (without the trailing dot).
pub fn answer(query: &[u8], lookup: impl Fn(&str) -> Option<Ipv4Addr>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (query[2] >> 3) & 0x0f;
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    if opcode != 0 {
        return Some(header_only(query, RCODE_NOTIMP));
    }
    if qdcount != 1 {
        return Some(header_only(query, RCODE_FORMERR));
    }
    let Some((name, end)) = read_name(query, 12) else {
        return Some(header_only(query, RCODE_FORMERR));
    };
    let Some(fixed) = query.get(end..end + 4) else {
        return Some(header_only(query, RCODE_FORMERR));
    };
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    let question = &query[12..end + 4];

    let (rcode, address) = match lookup(&name) {
        None => (RCODE_NXDOMAIN, None),
        // The name exists; for other types there is simply no record (NOERROR, no answer).
        Some(ip) if qclass == CLASS_IN && (qtype == TYPE_A || qtype == TYPE_ANY) => (0, Some(ip)),
        Some(_) => (0, None),
    };
    let mut reply = Vec::with_capacity(12 + question.len() + 16);
    reply.extend_from_slice(&query[0..2]);
    // QR, the question's opcode (0), AA; RD copied; RA off: we recurse nowhere.
    reply.push(0x80 | 0x04 | (query[2] & 0x01));
    reply.push(rcode);
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&u16::from(address.is_some()).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if let Some(ip) = address {
        // The owner name points at the question's (offset 12).
        reply.extend_from_slice(&[0xc0, 12]);
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&CLASS_IN.to_be_bytes());
        reply.extend_from_slice(&TTL_SECS.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// An answer with no sections, only a code.
fn header_only(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut reply = query[0..12].to_vec();
    reply[2] = 0x80 | (query[2] & 0x79);
    reply[3] = rcode;
    reply[4..12].fill(0);
    reply
}

/// A question name at `at` (uncompressed, as questions are), lower-cased and dot-joined,
/// and the offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            return Some((name, at));
        }
        // 0xc0: a compression pointer, which a question does not use; 0x40/0x80: reserved.
        if len > 63 || name.len() + len > 253 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        at += len;
    }
}

/// Opens the node's DNS socket, 127.0.0.1:53 inside `ns`. Call it from a tokio runtime.
pub fn bind_in(ns: &NetNs) -> Result<UdpSocket, DnsError> {
    let socket = ns
        .run(|| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 53)))?
        .map_err(|source| DnsError::Bind {
            ns: ns.name().to_owned(),
            source,
        })?;
    socket
        .set_nonblocking(true)
        .and_then(|()| UdpSocket::from_std(socket))
        .map_err(|source| DnsError::Bind {
            ns: ns.name().to_owned(),
            source,
        })
}

/// Answers on `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, names: MeshNames) {
    let mut buf = [0u8; 1500];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("node DNS: {e}");
                continue;
            }
        };
        if let Some(reply) = answer(&buf[..len], |name| names.lookup(name)) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error(
        "could not open the node DNS socket 127.0.0.1:53 in {ns}: {source} \
         (is something else listening there? `ip netns exec {ns} ss -lunp`)"
    )]
    Bind {
        ns: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn mesh(name: &str) -> Option<Ipv4Addr> {
        (name == "n3").then_some(Ipv4Addr::new(10, 77, 0, 4))
    }

    #[test]
    fn a_node_name_gets_its_address() {
        let q = query(0x1234, "N3", TYPE_A);
        let r = answer(&q, mesh).unwrap();
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 77, 0, 4]);
        // The question is echoed.
        assert_eq!(&r[12..q.len()], &q[12..]);
    }

    #[test]
    fn srv_and_strangers_get_no_such_name_at_once() {
        for (name, qtype) in [("_matrix-fed._tcp.n3", 33), ("matrix.org", TYPE_A)] {
            let r = answer(&query(7, name, qtype), mesh).unwrap();
            assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN, "{name}");
            assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        }
    }

    #[test]
    fn other_types_of_a_node_name_have_no_records() {
        let r = answer(&query(7, "n3", 28), mesh).unwrap();
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
    }

    #[test]
    fn broken_messages_are_refused_or_ignored() {
        assert_eq!(answer(&[1, 2, 3], mesh), None);
        let mut q = query(7, "n3", TYPE_A);
        q[2] |= 0x80;
        assert_eq!(answer(&q, mesh), None, "a response is not answered");
        let mut q = query(7, "n3", TYPE_A);
        q.truncate(q.len() - 3);
        assert_eq!(answer(&q, mesh).unwrap()[3], RCODE_FORMERR);
        let mut q = query(7, "n3", TYPE_A);
        q[2] = 0x10; // opcode 2, STATUS
        assert_eq!(answer(&q, mesh).unwrap()[3], RCODE_NOTIMP);
    }
}
