//! UDP probes stamped by the sender's clock and timed by the kernel on arrival, and the
//! flows and pings that carry them.

use super::*;

pub(crate) fn reconf_flow(pair: (usize, usize)) -> Flow {
    let mut flow = Flow::new(pair, 5006, u64::MAX, RECONF_GAP);
    flow.drain = Duration::from_millis(500);
    flow
}

/// `tc -batch` in the lab's hub, where the bridge ports are.
pub(crate) fn tc_batch(lab: &Lab, batch: &str) -> Result<()> {
    meshsim_tests::tc::tc_batch(&lab.hub, batch).map_err(|e| anyhow!(e))
}

/// A stream of timestamped UDP probes from `pair.0` to `pair.1`.
pub(crate) struct Flow {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) port: u16,
    pub(crate) count: u64,
    pub(crate) gap: Duration,
    /// How long the receiver keeps listening after the last probe was sent.
    pub(crate) drain: Duration,
}

impl Flow {
    pub(crate) fn new((from, to): (usize, usize), port: u16, count: u64, gap: Duration) -> Flow {
        Flow {
            from,
            to,
            port,
            count,
            gap,
            drain: Duration::from_millis(500),
        }
    }
}

/// What the receiver of a flow saw.
#[derive(Default)]
pub(crate) struct Probed {
    pub(crate) sent: u64,
    /// One-way delays in ms, in arrival order.
    pub(crate) delays_ms: Vec<f64>,
    /// Probes that arrived after one with a higher sequence number.
    pub(crate) reordered: u64,
    /// Probes the kernel gave no receive timestamp (stamped on reading instead).
    pub(crate) unstamped: u64,
}

impl Probed {
    pub(crate) fn merge(&mut self, other: Probed) {
        self.sent += other.sent;
        self.delays_ms.extend(other.delays_ms);
        self.reordered += other.reordered;
        self.unstamped += other.unstamped;
    }
}

/// The clock of the probes: realtime, because the kernel's receive timestamps are in it.
pub(crate) fn realtime_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_REALTIME).expect("CLOCK_REALTIME");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Sets an int socket option through libc (std has no setter for these).
pub(crate) fn set_int_option(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> Result<()> {
    // SAFETY: the pointer and length describe `value`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "setsockopt: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Closing sends a reset and drops unsent data, so a finished case leaves nothing to send.
pub(crate) fn set_linger_zero(s: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: as in `set_int_option`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    Ok(())
}

pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Reads one probe: its bytes and the kernel's receive time (ns, realtime), if it gave one.
/// `Ok(None)` when the read timed out.
pub(crate) fn recv_stamped(rx: &UdpSocket, buf: &mut [u8]) -> Result<Option<(usize, Option<u64>)>> {
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    match recvmsg::<()>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
        Ok(msg) => {
            let stamp = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => {
                    Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
                }
                _ => None,
            });
            Ok(Some((msg.bytes, stamp)))
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs `flows` at once and returns what each receiver saw. With `stop`, a flow of
/// `u64::MAX` probes ends when it is set.
pub(crate) fn probe(
    nodes: &[Node],
    flows: &[Flow],
    stop: Option<&AtomicBool>,
) -> Result<Vec<Probed>> {
    let mut ends = Vec::new();
    for f in flows {
        let dst = SocketAddrV4::new(nodes[f.to].ip, f.port);
        let rx = nodes[f.to]
            .ns
            .run(move || UdpSocket::bind(dst))?
            .with_context(|| format!("binding {dst}"))?;
        // Root may exceed rmem_max: a receiver that falls behind under emulation must not
        // turn into loss.
        set_int_option(&rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20)?;
        setsockopt(&rx, ReceiveTimestampns, &true)?;
        rx.set_read_timeout(Some(Duration::from_millis(50)))?;
        let tx = nodes[f.from].ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
        ends.push((rx, tx, dst));
    }
    let done: Vec<AtomicBool> = flows.iter().map(|_| AtomicBool::new(false)).collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        let handles: Vec<_> = flows
            .iter()
            .zip(ends)
            .zip(&done)
            .enumerate()
            .map(|(i, ((f, (rx, tx, dst)), done))| {
                let sender = s.spawn(move || -> Result<u64> {
                    // One CPU per sender: a thread that moves between CPUs can have its next
                    // packet through the bridge before the last (each CPU has its own backlog),
                    // which is the host reordering, not the shaper.
                    let mut cpu = CpuSet::new();
                    cpu.set(i % cpus)?;
                    sched_setaffinity(Pid::from_raw(0), &cpu)?;
                    let mut msg = [0u8; 64];
                    let start = Instant::now();
                    let mut seq = 0u64;
                    while seq < f.count && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                        seq += 1;
                        msg[0..8].copy_from_slice(&seq.to_le_bytes());
                        msg[8..16].copy_from_slice(&realtime_ns().to_le_bytes());
                        tx.send_to(&msg, dst)?;
                        let due = f.gap.saturating_mul(seq.min(u32::MAX as u64) as u32);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    done.store(true, Ordering::Release);
                    Ok(seq)
                });
                let drain = f.drain;
                let receiver = s.spawn(move || -> Result<Probed> {
                    let mut p = Probed::default();
                    let mut buf = [0u8; 2048];
                    let mut highest = 0u64;
                    let mut done_at = None;
                    loop {
                        if let Some((n, stamp)) = recv_stamped(&rx, &mut buf)?
                            && n >= 16
                        {
                            let at = stamp.unwrap_or_else(|| {
                                p.unstamped += 1;
                                realtime_ns()
                            });
                            let seq = u64::from_le_bytes(buf[0..8].try_into()?);
                            let sent = u64::from_le_bytes(buf[8..16].try_into()?);
                            p.delays_ms.push((at as i64 - sent as i64) as f64 / 1e6);
                            if seq < highest {
                                p.reordered += 1;
                            }
                            highest = highest.max(seq);
                        }
                        if done.load(Ordering::Acquire) {
                            let at = *done_at.get_or_insert_with(Instant::now);
                            if at.elapsed() >= drain {
                                return Ok(p);
                            }
                        }
                    }
                });
                (sender, receiver)
            })
            .collect();
        handles
            .into_iter()
            .map(|(sender, receiver)| {
                let sent = sender
                    .join()
                    .map_err(|_| anyhow!("a probe sender panicked"))??;
                let mut p = receiver
                    .join()
                    .map_err(|_| anyhow!("a probe receiver panicked"))??;
                p.sent = sent;
                Ok(p)
            })
            .collect()
    })
}

/// Average ping RTT in ms (the cross-check of the probes), if ping answered.
pub(crate) fn ping_avg(lab: &Lab, (a, b): (usize, usize)) -> Option<f64> {
    let out = lab.ping(a, b, PINGS, "0.05");
    let text = String::from_utf8_lossy(&out.stdout);
    // "rtt min/avg/max/mdev = 100.1/100.3/100.9/0.2 ms"
    let stats = text.lines().find(|l| l.contains("min/avg/max"))?;
    stats
        .split('=')
        .nth(1)?
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}
