//! Pace or police? Pacing needs the `fq` qdisc on the device the job's
//! packets leave by (it holds each packet until its departure time; other
//! qdiscs send it at once, and the bucket would then only drop). The choice
//! is made from the root qdiscs of the devices in ffrtmp's network
//! namespace, read with one rtnetlink dump each of links and qdiscs.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::shaper::EgressMode;

/// The mode for egress limits, and why, for the log and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressChoice {
    pub mode: EgressMode,
    pub reason: String,
}

/// A network device: its index, name and whether it counts (up, not lo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    pub counts: bool,
}

/// A qdisc: the device, its handle and parent, and its kind ("fq", "mq", …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: i32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
}

const TC_H_ROOT: u32 = 0xFFFF_FFFF;

/// The choice for these devices: pace only if every device that counts
/// paces (its root is `fq`, or `mq` with `fq` on every queue).
pub fn choose(links: &[Link], qdiscs: &[Qdisc]) -> EgressChoice {
    let mut paced = Vec::new();
    let mut not = Vec::new();
    for link in links.iter().filter(|l| l.counts) {
        let on = |parent: u32| {
            qdiscs
                .iter()
                .filter(move |q| q.ifindex == link.index && q.parent == parent)
        };
        let root = on(TC_H_ROOT).next();
        let kind = match root {
            Some(q) if q.kind == "fq" => None,
            Some(q) if q.kind == "mq" => {
                let leaves: Vec<&Qdisc> = qdiscs
                    .iter()
                    .filter(|l| l.ifindex == link.index && l.parent >> 16 == q.handle >> 16 && l.parent != TC_H_ROOT)
                    .collect();
                match leaves.iter().find(|l| l.kind != "fq") {
                    Some(l) => Some(format!("mq with {} on a queue", l.kind)),
                    None if leaves.is_empty() => Some("mq without queues".to_string()),
                    None => None,
                }
            }
            Some(q) => Some(q.kind.clone()),
            None => Some("no qdisc".to_string()),
        };
        match kind {
            None => paced.push(link.name.clone()),
            Some(kind) => not.push((link.name.clone(), kind)),
        }
    }
    if let Some((name, kind)) = not.first() {
        return EgressChoice {
            mode: EgressMode::Police,
            reason: format!(
                "policing: {name} has {kind}, not fq (pacing needs fq to hold packets until their departure \
                 time: `tc qdisc replace dev {name} root fq`){}",
                if not.len() > 1 {
                    format!(", and {} other device(s) neither", not.len() - 1)
                } else {
                    String::new()
                }
            ),
        };
    }
    if paced.is_empty() {
        return EgressChoice {
            mode: EgressMode::Police,
            reason: "policing: no network device is up besides lo".to_string(),
        };
    }
    EgressChoice {
        mode: EgressMode::Pace,
        reason: format!("pacing: fq on {}", paced.join(", ")),
    }
}

/// The choice for ffrtmp's own network namespace; a failed dump polices,
/// saying why.
pub fn egress_choice() -> EgressChoice {
    match dump_links().and_then(|links| Ok((links, dump_qdiscs()?))) {
        Ok((links, qdiscs)) => choose(&links, &qdiscs),
        Err(e) => EgressChoice {
            mode: EgressMode::Police,
            reason: format!("policing: the devices' qdiscs could not be read ({e})"),
        },
    }
}

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWQDISC: u16 = 36;
const RTM_GETQDISC: u16 = 38;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
const TCA_KIND: u16 = 1;
const IFF_UP: u32 = 1;
const IFF_LOOPBACK: u32 = 8;
const NLMSG_HDRLEN: usize = 16;

fn dump_links() -> io::Result<Vec<Link>> {
    // struct ifinfomsg: 16 bytes, all zero (every family).
    let mut links = Vec::new();
    dump(RTM_GETLINK, &[0u8; 16], RTM_NEWLINK, |body| {
        let (Some(index), Some(flags)) = (i32_at(body, 4), u32_at(body, 8)) else {
            return;
        };
        let name = attr(body.get(16..).unwrap_or(&[]), IFLA_IFNAME)
            .map(c_string)
            .unwrap_or_default();
        links.push(Link {
            index,
            name,
            counts: flags & IFF_UP != 0 && flags & IFF_LOOPBACK == 0,
        });
    })?;
    Ok(links)
}

fn dump_qdiscs() -> io::Result<Vec<Qdisc>> {
    // struct tcmsg: 20 bytes, all zero (every device).
    let mut qdiscs = Vec::new();
    dump(RTM_GETQDISC, &[0u8; 20], RTM_NEWQDISC, |body| {
        let (Some(ifindex), Some(handle), Some(parent)) = (i32_at(body, 4), u32_at(body, 8), u32_at(body, 12)) else {
            return;
        };
        let kind = attr(body.get(20..).unwrap_or(&[]), TCA_KIND)
            .map(c_string)
            .unwrap_or_default();
        qdiscs.push(Qdisc {
            ifindex,
            handle,
            parent,
            kind,
        });
    })?;
    Ok(qdiscs)
}

/// Send one dump request and hand each `want` message's body to `each`.
fn dump(request: u16, header: &[u8], want: u16, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    let len = (NLMSG_HDRLEN + header.len()) as u32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&request.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(header);
    socket.send_to(&msg, &SocketAddr::new(0, 0), 0)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut rest = &buf[..n];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32_at(rest, 0).unwrap_or(0) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(io::Error::other("a truncated rtnetlink message"));
            }
            let body = &rest[NLMSG_HDRLEN..len];
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = i32_at(body, 0).unwrap_or(0);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                k if k == want => each(body),
                _ => {}
            }
            rest = &rest[align(len).min(rest.len())..];
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    u32_at(b, at).map(|v| v as i32)
}

/// The payload of the first attribute of type `kind` in `attrs`.
fn attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    None
}

fn c_string(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: i32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            counts: true,
        }
    }

    fn q(ifindex: i32, handle: u32, parent: u32, kind: &str) -> Qdisc {
        Qdisc {
            ifindex,
            handle,
            parent,
            kind: kind.into(),
        }
    }

    #[test]
    fn fq_everywhere_paces() {
        let c = choose(&[link(2, "eth0")], &[q(2, 0x8001_0000, TC_H_ROOT, "fq")]);
        assert_eq!(c.mode, EgressMode::Pace);
        assert_eq!(c.reason, "pacing: fq on eth0");
    }

    #[test]
    fn mq_with_fq_leaves_paces_and_with_fq_codel_polices() {
        let leaves = |kind: &str| {
            vec![
                q(2, 0x0001_0000, TC_H_ROOT, "mq"),
                q(2, 0x8002_0000, 0x0001_0001, kind),
                q(2, 0x8003_0000, 0x0001_0002, kind),
            ]
        };
        assert_eq!(choose(&[link(2, "eth0")], &leaves("fq")).mode, EgressMode::Pace);
        let c = choose(&[link(2, "eth0")], &leaves("fq_codel"));
        assert_eq!(c.mode, EgressMode::Police);
        assert!(
            c.reason.contains("eth0 has mq with fq_codel on a queue"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn one_device_without_fq_polices_and_names_the_fix() {
        let c = choose(
            &[link(2, "eth0"), link(3, "veth0")],
            &[q(2, 0x8001_0000, TC_H_ROOT, "fq"), q(3, 0, TC_H_ROOT, "noqueue")],
        );
        assert_eq!(c.mode, EgressMode::Police);
        assert!(c.reason.contains("veth0 has noqueue, not fq"), "{}", c.reason);
        assert!(c.reason.contains("tc qdisc replace dev veth0 root fq"), "{}", c.reason);
    }

    #[test]
    fn down_devices_and_lo_do_not_count() {
        let down = Link {
            counts: false,
            ..link(1, "lo")
        };
        let c = choose(&[down], &[q(1, 0, TC_H_ROOT, "noqueue")]);
        assert_eq!(c.mode, EgressMode::Police);
        assert!(c.reason.contains("no network device is up"), "{}", c.reason);
    }

    #[test]
    fn attributes_are_found_past_others() {
        // (len 8, type 2, "abcd"), (len 7, type 1, "fq\0"), padded.
        let attrs = [8, 0, 2, 0, b'a', b'b', b'c', b'd', 7, 0, 1, 0, b'f', b'q', 0, 0];
        assert_eq!(attr(&attrs, TCA_KIND).map(c_string).as_deref(), Some("fq"));
        assert_eq!(attr(&attrs, 9), None);
        assert_eq!(attr(&[200, 0, 1, 0], 1), None, "a length past the end");
    }
}
