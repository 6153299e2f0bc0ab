//! TCP goodput: payload the receiver acknowledged over a window, read from the senders'
//! TCP_INFO.

use super::*;

/// What a TCP case measured.
pub(crate) struct Goodput {
    /// Payload the receiver acknowledged over the window (cumulatively or selectively), in
    /// bit/s: see [`delivered`].
    pub(crate) bps: f64,
    /// The receiver's reads between its first and last read inside the window, in bit/s.
    pub(crate) read_bps: f64,
    /// meshsim only: what the link's counters accepted over the window, on the wire, in
    /// bit/s, and the packets its queue limit dropped then (progress lines only: counted on
    /// acceptance, it differs from what left by the change in the queue's fill, up to 200 ms
    /// of data).
    pub(crate) link: Option<(f64, u64)>,
}

/// Payload bytes the receivers have, as their senders know it: acknowledged cumulatively plus
/// acknowledged selectively (SACKed segments, of one MSS each). Unlike the bytes a receiver has
/// read, this does not jump when a retransmission fills a hole and releases everything held
/// behind it, which over a window of seconds at 64 kbit/s would skew the figure by a whole
/// queue's worth (measured: +13%).
pub(crate) fn delivered(conns: &[TcpStream]) -> Result<u64> {
    let mut total = 0;
    for c in conns {
        // SAFETY: tcp_info is plain old data; zero is a valid value of every field.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the pointer and length describe `info`, which outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                c.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        ensure!(rc == 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        total += info.tcpi_bytes_acked + u64::from(info.tcpi_sacked) * u64::from(info.tcpi_snd_mss);
    }
    Ok(total)
}

/// One look at a TCP case at a window's end.
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) delivered: u64,
    pub(crate) link: Option<LinkCounters>,
}

/// TCP from `pair.0` to `pair.1` with `flows` connections, measured over `window` after
/// `warmup`; with `link`, that meshsim link's counters are read at the window's ends too.
pub(crate) fn tcp_goodput(
    lab: &Lab,
    (a, b): (usize, usize),
    port: u16,
    flows: usize,
    (warmup, window): (Duration, Duration),
    link: Option<LinkKey>,
) -> Result<Goodput> {
    let addr = SocketAddrV4::new(lab.nodes[b].ip, port);
    let listener = lab.nodes[b].ns.run(move || TcpListener::bind(addr))??;
    let senders: Vec<TcpStream> = lab.nodes[a]
        .ns
        .run(move || {
            (0..flows)
                .map(|_| TcpStream::connect_timeout(&addr.into(), Duration::from_secs(10)))
                .collect::<std::io::Result<Vec<_>>>()
        })?
        .with_context(|| format!("connecting to {addr}"))?;
    let receivers = (0..flows)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<std::io::Result<Vec<_>>>()?;
    for conn in &senders {
        set_linger_zero(conn)?;
        conn.set_write_timeout(Some(Duration::from_millis(100)))?;
    }
    let start = Instant::now();
    let (w0, w1) = (start + warmup, start + warmup + window);
    let stop_at = w1 + Duration::from_millis(300);
    let sample = |at: Instant| -> Result<Sample> {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        Ok(Sample {
            at: Instant::now(),
            delivered: delivered(&senders)?,
            link: link.map(|key| lab.dp.link_counters(&key)).transpose()?,
        })
    };
    let (events, (s0, s1)) = std::thread::scope(|s| -> Result<_> {
        let sampler = s.spawn(|| -> Result<_> { Ok((sample(w0)?, sample(w1)?)) });
        for conn in &senders {
            s.spawn(move || {
                let chunk = vec![0x55u8; 1 << 16];
                let mut conn = conn;
                while Instant::now() < stop_at {
                    match conn.write(&chunk) {
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
            });
        }
        let readers: Vec<_> = receivers
            .into_iter()
            .map(|mut conn| {
                s.spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                    let mut buf = vec![0u8; 1 << 16];
                    let mut events = Vec::new();
                    while Instant::now() < stop_at {
                        match conn.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => events.push((Instant::now(), n)),
                            Err(e) if is_timeout(&e) => {}
                            Err(_) => break,
                        }
                    }
                    events
                })
            })
            .collect();
        let mut all = Vec::new();
        for r in readers {
            all.extend(r.join().map_err(|_| anyhow!("a TCP reader panicked"))?);
        }
        let samples = sampler
            .join()
            .map_err(|_| anyhow!("the sampler panicked"))??;
        Ok((all, samples))
    })?;
    let seconds = s1.at.duration_since(s0.at).as_secs_f64();
    let link = match (s0.link, s1.link) {
        (Some(c0), Some(c1)) => Some((
            (c1.bytes - c0.bytes) as f64 * 8.0 / seconds,
            c1.dropped_queue - c0.dropped_queue,
        )),
        _ => None,
    };
    let mut inside: Vec<(Instant, usize)> = events
        .into_iter()
        .filter(|(t, _)| *t >= w0 && *t <= w1)
        .collect();
    inside.sort_by_key(|(t, _)| *t);
    let span = match (inside.first(), inside.last()) {
        (Some(first), Some(last)) => last.0.duration_since(first.0).as_secs_f64(),
        _ => 0.0,
    };
    let bytes: usize = inside.iter().skip(1).map(|(_, n)| n).sum();
    Ok(Goodput {
        bps: (s1.delivered - s0.delivered) as f64 * 8.0 / seconds,
        read_bps: if span > 0.0 {
            bytes as f64 * 8.0 / span
        } else {
            0.0
        },
        link,
    })
}
