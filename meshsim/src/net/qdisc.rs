//! The root qdisc of an interface: `fq`, which releases each packet at the departure time
//! the classifier wrote into `skb->tstamp` (docs/architecture.md, "The datapath contract").

use std::time::Duration;

use futures_util::TryStreamExt as _;
use rtnetlink::{
    packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE, NetlinkMessage},
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    },
};

use super::rtnl::{Netlink, NetlinkError, is_errno};

/// `TCA_FQ_*` attribute numbers from `include/uapi/linux/pkt_sched.h`;
/// netlink-packet-route has no typed fq options.
const TCA_FQ_PLIMIT: u16 = 1;
const TCA_FQ_FLOW_PLIMIT: u16 = 2;
const TCA_FQ_HORIZON: u16 = 14;
const TCA_FQ_HORIZON_DROP: u16 = 15;

/// The `fq` parameters meshsim sets.
///
/// fq sits behind the classifier, which has already decided what each link accepts (its
/// queue limit and loss). fq's job is only to hold packets until their departure time,
/// so it must never drop one: its limits have to exceed what the links can put in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FqOptions {
    /// Packets held on the whole device at once (`limit`; kernel default 10 000).
    pub limit: u32,
    /// Packets held per flow (`flow_limit`; kernel default 100, far too low for a link
    /// with latency). Needs `rate × (latency + queue) / packet size`; see
    /// [`FqOptions::flow_limit_for`].
    pub flow_limit: u32,
    /// How far in the future a departure time may be, in microseconds (`horizon`;
    /// kernel default 10 s).
    pub horizon_us: u32,
    /// What fq does with a packet beyond the horizon: drop it (`true`, the kernel default)
    /// or send it at the horizon (`false`).
    pub horizon_drop: bool,
}

impl Default for FqOptions {
    /// Limits for emulated links:
    /// - `flow_limit` 10 000 covers a 100 Mbit/s link holding 1.2 s of latency plus queue
    ///   in 1500-byte packets (12.5 MB/s × 1.2 s / 1500 B = 10 000);
    /// - `limit` 100 000 leaves room for ten such flows on one device. Both are caps, not
    ///   reservations: memory is used only by packets actually held;
    /// - `horizon` 60 s, beyond any delay meshsim configures, and `horizon_drop` off, so a
    ///   packet past it is sent early rather than silently lost.
    fn default() -> Self {
        Self {
            limit: 100_000,
            flow_limit: 10_000,
            horizon_us: 60_000_000,
            horizon_drop: false,
        }
    }
}

impl FqOptions {
    /// The smallest `flow_limit` that lets a link of `bandwidth_bytes_per_s` hold `hold` worth
    /// of packets of `packet_bytes` (latency plus the link's queue time): rounded up,
    /// saturating at `u32::MAX`. A zero packet size counts as one byte.
    pub fn flow_limit_for(bandwidth_bytes_per_s: u64, hold: Duration, packet_bytes: u32) -> u32 {
        let bytes = u128::from(bandwidth_bytes_per_s) * hold.as_nanos();
        let per_packet = u128::from(packet_bytes.max(1)) * 1_000_000_000;
        u32::try_from(bytes.div_ceil(per_packet)).unwrap_or(u32::MAX)
    }

    fn to_tc_options(self) -> Vec<TcOption> {
        let u32_option =
            |kind, value: u32| TcOption::Other(DefaultNla::new(kind, value.to_ne_bytes().to_vec()));
        vec![
            u32_option(TCA_FQ_PLIMIT, self.limit),
            u32_option(TCA_FQ_FLOW_PLIMIT, self.flow_limit),
            u32_option(TCA_FQ_HORIZON, self.horizon_us),
            // A u8 in the kernel's policy, checked strictly: exactly one byte.
            TcOption::Other(DefaultNla::new(
                TCA_FQ_HORIZON_DROP,
                vec![u8::from(self.horizon_drop)],
            )),
        ]
    }
}

impl Netlink {
    /// Makes `fq` with `options` the root qdisc of `ifindex`, replacing whatever was there
    /// (an existing fq is changed in place, without dropping its packets).
    ///
    /// Fails with [`NetlinkError::FqUnsupported`] on a kernel without sch_fq.
    pub async fn replace_root_fq(
        &self,
        ifindex: u32,
        options: &FqOptions,
    ) -> Result<(), NetlinkError> {
        let op = self.op(format_args!(
            "install fq as root qdisc of interface {ifindex}"
        ));
        let index = tc_index(ifindex, &op)?;
        // rtnetlink's QDiscNewRequest cannot carry TCA_KIND/TCA_OPTIONS, so build the message.
        let mut tc = TcMessage::with_index(index);
        // Handle left 0: the kernel picks one, as `tc qdisc replace ... root fq` does.
        tc.header.parent = TcHandle::ROOT;
        tc.attributes.push(TcAttribute::Kind("fq".to_owned()));
        tc.attributes
            .push(TcAttribute::Options(options.to_tc_options()));
        let mut message = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(tc));
        message.header.flags = NLM_F_CREATE | NLM_F_REPLACE;
        match self.request_ack(message).await {
            Ok(()) => Ok(()),
            // With parent ROOT, ENOENT can only mean "unknown qdisc kind": the kernel has
            // already tried to load the module by then.
            Err(e) if is_errno(&e, libc::ENOENT) => Err(NetlinkError::FqUnsupported { op }),
            Err(e) => Err(NetlinkError::from_rtnetlink(op, e)),
        }
    }

    /// Removes the root qdisc of `ifindex`, restoring the device's default. Having none
    /// to remove (the default is already there) is not an error.
    pub async fn delete_root_qdisc(&self, ifindex: u32) -> Result<(), NetlinkError> {
        let op = self.op(format_args!("delete root qdisc of interface {ifindex}"));
        let mut request = self.handle.qdisc().del(tc_index(ifindex, &op)?);
        // A delete needs the parent; 0 is refused with EINVAL.
        request.message_mut().header.parent = TcHandle::ROOT;
        match request.execute().await {
            Ok(()) => Ok(()),
            // ENOENT: only the built-in default (handle 0) is there, which cannot be deleted.
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
            Err(e) => Err(NetlinkError::from_rtnetlink(op, e)),
        }
    }

    /// The kind of the root qdisc of `ifindex` ("fq", "noqueue", ...), or `None` when the
    /// kernel lists none (a down device has the hidden built-in `noop`).
    pub async fn root_qdisc_kind(&self, ifindex: u32) -> Result<Option<String>, NetlinkError> {
        let op = self.op(format_args!("read root qdisc of interface {ifindex}"));
        let index = tc_index(ifindex, &op)?;
        // The kernel dumps every device's qdiscs whatever index the request names.
        let qdiscs: Vec<TcMessage> = self
            .handle
            .qdisc()
            .get()
            .index(index)
            .execute()
            .try_filter(|tc| {
                std::future::ready(tc.header.index == index && tc.header.parent == TcHandle::ROOT)
            })
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))?;
        Ok(qdiscs
            .iter()
            .flat_map(|tc| &tc.attributes)
            .find_map(|attribute| match attribute {
                TcAttribute::Kind(kind) => Some(kind.clone()),
                _ => None,
            }))
    }
}

/// tc messages carry the index as an i32.
fn tc_index(ifindex: u32, op: &str) -> Result<i32, NetlinkError> {
    i32::try_from(ifindex).map_err(|_| NetlinkError::Kernel {
        op: op.to_owned(),
        errno: libc::ENODEV,
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
        hint: "interface indexes above i32::MAX do not exist",
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::{Emitable, NlasIterator};

    use super::*;

    #[test]
    fn default_flow_limit_covers_100_mbit_with_1_2_s_in_flight() {
        let needed = FqOptions::flow_limit_for(100_000_000 / 8, Duration::from_millis(1200), 1500);
        assert_eq!(needed, 10_000);
        let options = FqOptions::default();
        assert!(options.flow_limit >= needed);
        assert!(options.limit >= options.flow_limit);
        assert!(!options.horizon_drop);
        assert!(Duration::from_micros(options.horizon_us.into()) >= Duration::from_secs(60));
    }

    #[test]
    fn flow_limit_rounds_up_and_saturates() {
        assert_eq!(
            FqOptions::flow_limit_for(1500, Duration::from_millis(1001), 1500),
            2
        );
        assert_eq!(
            FqOptions::flow_limit_for(0, Duration::from_secs(1), 1500),
            0
        );
        assert_eq!(
            FqOptions::flow_limit_for(u64::MAX, Duration::from_secs(1000), 0),
            u32::MAX
        );
    }

    #[test]
    fn options_encode_as_the_kernel_reads_them() {
        let options = FqOptions {
            limit: 7,
            flow_limit: 5,
            horizon_us: 60_000_000,
            horizon_drop: false,
        };
        let nlas = options.to_tc_options();
        let mut bytes = vec![0; nlas.as_slice().buffer_len()];
        nlas.as_slice().emit(&mut bytes);
        let parsed: Vec<(u16, Vec<u8>)> = NlasIterator::new(&bytes[..])
            .map(|nla| {
                let nla = nla.expect("well-formed attribute");
                (nla.kind(), nla.value().to_vec())
            })
            .collect();
        assert_eq!(
            parsed,
            vec![
                (1, 7u32.to_ne_bytes().to_vec()),
                (2, 5u32.to_ne_bytes().to_vec()),
                (14, 60_000_000u32.to_ne_bytes().to_vec()),
                (15, vec![0]),
            ]
        );
    }

    #[test]
    fn fq_missing_says_what_to_do() {
        let err = NetlinkError::FqUnsupported {
            op: "install fq".into(),
        };
        let text = err.to_string();
        assert!(
            text.contains("sch_fq") && text.contains("CONFIG_NET_SCH_FQ"),
            "{text}"
        );
        assert_eq!(err.errno(), Some(libc::ENOENT));
    }
}
