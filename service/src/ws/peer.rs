//! One client's socket as the hub sees it: frames are written straight from the publishing
//! task with non-blocking writes, and only what the socket cannot take at once is queued for
//! the connection task to finish. No task wakes up per message.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use smallvec::SmallVec;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::deflate::Compressor;
use crate::hub::{Frame, Offer, Outlet, StreamId, Upcoming};
use crate::metrics::Metrics;

/// Frames written per system call.
const MAX_IOV: usize = 64;

/// Shared between the hub (offer, flush) and the connection task (everything else).
#[derive(Debug)]
pub struct Peer {
    id: u64,
    pub stream: TcpStream,
    state: Mutex<PeerState>,
    /// Wakes the connection task: the socket blocked, the client was kicked, or it failed.
    pub wake: Notify,
    capacity: usize,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct PeerState {
    /// The last seq sent (or queued) per subscribed stream. Inline for the usual one or two
    /// streams: at 10,000 clients the hub's offer missed the cache on a map's table and
    /// buckets after the lock (docs/benchmarks.md); a scan of a few entries costs less.
    subs: Subs,
    /// Whole frames waiting to be written; the front may be partly written already.
    pending: VecDeque<Out>,
    /// With permessage-deflate: the compressor, and how many front frames of `pending` have
    /// been through it. Those are fixed in place: the client's decompressor will see them in
    /// that order, so nothing may be put before them.
    deflate: Option<Compressor>,
    fixed: usize,
    /// Bytes of the front frame already written.
    written: usize,
    /// Set while a subscribe is being acknowledged: frames queue, nothing is written.
    hold: bool,
    /// The socket would block: the connection task is waiting for it to drain.
    blocked: bool,
    /// Queued since the last flush (the hub's corked batch).
    corked: bool,
    /// Snapshots and replays a subscribe queued: room beyond `capacity` that the client's own
    /// catch-up may take, so a long replay never makes it a slow consumer by itself. It shrinks
    /// as the queue drains.
    allowance: usize,
    /// Why the hub dropped this peer from its streams, if it did.
    dropped: Option<Dropped>,
    /// No more data frames: failed, kicked or closing.
    closed: bool,
}

/// A frame waiting to be written.
#[derive(Debug)]
struct Out {
    wire: Bytes,
    /// A data message on this stream, which goes through the compressor (when there is one)
    /// just before it is written: compressing in write order keeps the client's window in
    /// step with ours.
    data: Option<StreamId>,
}

impl Out {
    fn data(frame: &Frame) -> Self {
        Self {
            wire: frame.wire.clone(),
            data: Some(frame.stream),
        }
    }
    fn control(wire: Bytes) -> Self {
        Self { wire, data: None }
    }
}

/// Why the hub dropped a peer from its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its queue overflowed.
    SlowConsumer,
    /// A stream it follows jumped (see [`Outlet::interrupt`]): the client must resume.
    Interrupted,
}

/// What a write attempt left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    Done,
    Blocked,
    Failed,
}

impl Peer {
    pub fn new(
        id: u64,
        stream: TcpStream,
        capacity: usize,
        metrics: Arc<Metrics>,
        deflate: Option<Compressor>,
    ) -> Self {
        Self {
            id,
            stream,
            state: Mutex::new(PeerState {
                deflate,
                ..PeerState::default()
            }),
            wake: Notify::new(),
            capacity,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the hub dropped this peer, if it did: the connection must then end.
    pub fn dropped(&self) -> Option<Dropped> {
        self.lock().dropped
    }

    /// The last seq sent per stream.
    pub fn positions(&self) -> Vec<(StreamId, u64)> {
        self.lock().subs.iter().collect()
    }

    pub fn subscription_count(&self) -> usize {
        self.lock().subs.len()
    }

    pub fn is_subscribed(&self, stream: StreamId) -> bool {
        self.lock().subs.contains(&stream)
    }

    /// Starts acknowledging a subscribe: from now on frames for `streams` are accepted but held
    /// until [`Self::release`], so the acknowledgement and snapshots go out first.
    pub fn hold(&self, streams: &[(StreamId, u64)]) {
        let mut st = self.lock();
        st.hold = true;
        for (stream, from) in streams {
            st.subs.entry(*stream, *from);
        }
    }

    /// Writes `first` (the acknowledgement), then `frames` (snapshots and replays), then
    /// whatever was held, and lifts the hold.
    pub fn release(&self, first: Bytes, frames: Vec<Frame>) -> Drain {
        let mut st = self.lock();
        let held = std::mem::take(&mut st.pending);
        // A partly written frame must stay in front: it is already on the wire; so must every
        // frame already through the compressor.
        let keep = st.fixed.max(usize::from(st.written > 0));
        let mut rest = held.into_iter();
        st.pending.extend(rest.by_ref().take(keep));
        st.pending.push_back(Out::control(first));
        // Snapshots and replays precede anything held, which was accepted against the
        // provisional position; they only ever move the position forward.
        st.allowance += frames.len();
        for f in frames {
            let last = st.subs.entry(f.stream, 0);
            *last = (*last).max(f.seq);
            st.pending.push_back(Out::data(&f));
        }
        st.pending.extend(rest);
        st.hold = false;
        self.write_counted(&mut st, true)
    }

    /// Forgets a stream; call after the hub has dropped this peer from it.
    pub fn forget(&self, stream: StreamId) -> bool {
        self.lock().subs.remove(&stream)
    }

    /// Queues a control message (acknowledgement, error, heartbeat) and writes what it can.
    pub fn send(&self, wire: Bytes) -> Drain {
        let mut st = self.lock();
        st.pending.push_back(Out::control(wire));
        if st.hold || st.blocked {
            return Drain::Blocked;
        }
        self.write_counted(&mut st, true)
    }

    /// Writes what is queued; called by the connection task when the socket is writable.
    pub fn drain(&self) -> Drain {
        let mut st = self.lock();
        st.blocked = false;
        self.write_counted(&mut st, false)
    }

    /// Stops data frames and keeps only what is already partly on the wire, so that a goodbye
    /// can follow at once.
    pub fn close_data(&self) {
        let mut st = self.lock();
        st.closed = true;
        if st.written > 0 {
            st.pending.truncate(1);
        } else {
            st.pending.clear();
        }
        st.fixed = st.fixed.min(st.pending.len());
    }

    /// Drops the compressor of a connection that sent no data since the last call (see
    /// [`Compressor::release_if_idle`]); the connection task calls it once per heartbeat.
    pub fn release_idle_compressor(&self) {
        if let Some(c) = self.lock().deflate.as_mut() {
            c.release_if_idle();
        }
    }

    /// A non-blocking `send` (one frame) or `sendmsg` (several) rather than tokio's `writev`:
    /// the socket calls skip the file layer (`fdget_pos`, `vfs_writev`,
    /// `do_iter_readv_writev`), about 3.5 % of the server's CPU time at the point benchmark in
    /// the profile, and `send` skips the iovec import too (`docs/benchmarks.md`).
    ///
    /// `via_runtime` goes through tokio's readiness, which a would-block clears so that the
    /// connection task's `writable()` waits for the socket. The hub's writes skip it: reading
    /// the readiness word of every socket was a cache miss per message (a fifth of the write
    /// path's samples at 10,000 connections), and a would-block there always hands the socket
    /// to the connection task, whose first write goes through the runtime and clears it.
    fn send_iov(&self, iov: &[IoSlice<'_>], via_runtime: bool) -> io::Result<usize> {
        let send = || {
            let sock = SockRef::from(&self.stream);
            match iov {
                [one] => sock.send(one),
                _ => sock.send_vectored(iov),
            }
        };
        if via_runtime {
            self.stream.try_io(Interest::WRITABLE, send)
        } else {
            send()
        }
    }

    /// Writes what is queued. `via_runtime`: see [`Self::send_iov`].
    fn write(&self, st: &mut PeerState, via_runtime: bool) -> (Drain, usize, usize) {
        let (mut frames, mut bytes) = (0usize, 0usize);
        let result = loop {
            if st.pending.is_empty() {
                break Drain::Done;
            }
            if let Err(e) = self.compress_front(st) {
                compressor_failed(st, &e);
                break Drain::Failed;
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, f) in st.pending.iter().take(MAX_IOV).enumerate() {
                iov[i] = IoSlice::new(if i == 0 {
                    &f.wire[st.written..]
                } else {
                    &f.wire
                });
                n += 1;
            }
            match self.send_iov(&iov[..n], via_runtime) {
                Ok(0) => break Drain::Failed,
                Ok(mut wrote) => {
                    bytes += wrote;
                    while let Some(front) = st.pending.front() {
                        let left = front.wire.len() - st.written;
                        if wrote < left {
                            st.written += wrote;
                            break;
                        }
                        wrote -= left;
                        st.written = 0;
                        st.pending.pop_front();
                        st.fixed = st.fixed.saturating_sub(1);
                        frames += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Drain::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Drain::Failed,
            }
        };
        // The catch-up frames are at the front: as the queue drains, so does their room.
        st.allowance = st.allowance.min(st.pending.len());
        if st.pending.is_empty() && st.pending.capacity() > 16 {
            st.pending = VecDeque::new();
        }
        match result {
            Drain::Done => {}
            Drain::Blocked => self.mark_blocked(st),
            Drain::Failed => st.closed = true,
        }
        (result, frames, bytes)
    }

    /// The socket took less than it was given: the connection task waits for it to drain.
    fn mark_blocked(&self, st: &mut PeerState) {
        st.blocked = true;
        self.metrics.writes_blocked.inc();
    }

    /// Compresses the data frames among the next [`MAX_IOV`] to be written, in order.
    fn compress_front(&self, st: &mut PeerState) -> Result<(), super::deflate::CompressError> {
        let PeerState {
            pending,
            deflate,
            fixed,
            ..
        } = st;
        let Some(deflate) = deflate.as_mut() else {
            return Ok(());
        };
        let end = pending.len().min(MAX_IOV);
        if *fixed >= end {
            return Ok(());
        }
        for out in pending.range_mut(*fixed..end) {
            if let Some(stream) = out.data.take() {
                out.wire = self.compress(deflate, &out.wire, stream)?;
            }
        }
        *fixed = (*fixed).max(end);
        Ok(())
    }

    fn compress(
        &self,
        deflate: &mut Compressor,
        wire: &Bytes,
        stream: StreamId,
    ) -> Result<Bytes, super::deflate::CompressError> {
        let Some(out) = deflate.compress(wire, stream)? else {
            return Ok(wire.clone());
        };
        self.metrics.deflate_in_bytes.inc_by(out.raw_len as u64);
        self.metrics
            .deflate_out_bytes
            .inc_by(out.payload_len as u64);
        Ok(out.frame)
    }

    /// Writes one frame with nothing queued before it, without touching the queue unless the
    /// socket leaves part of it: the common case at scale, one stream per client.
    fn write_one(&self, st: &mut PeerState, frame: &Frame) -> (Drain, usize, usize) {
        let wire = &frame.wire;
        let compressed;
        let wire = match st
            .deflate
            .as_mut()
            .map(|d| self.compress(d, wire, frame.stream))
        {
            None => wire,
            Some(Ok(c)) => {
                compressed = c;
                &compressed
            }
            Some(Err(e)) => {
                compressor_failed(st, &e);
                return (Drain::Failed, 0, 0);
            }
        };
        // From here on the frame is fixed: if it waits, it waits at the front.
        let wait = |st: &mut PeerState| {
            st.pending.push_back(Out::control(wire.clone()));
            st.fixed = st.pending.len();
        };
        loop {
            match self.send_iov(&[IoSlice::new(wire)], false) {
                Ok(n) if n == wire.len() => return (Drain::Done, 1, n),
                Ok(0) => {
                    st.closed = true;
                    return (Drain::Failed, 0, 0);
                }
                Ok(n) => {
                    wait(st);
                    st.written = n;
                    self.mark_blocked(st);
                    return (Drain::Blocked, 0, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(st);
                    self.mark_blocked(st);
                    return (Drain::Blocked, 0, 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    st.closed = true;
                    return (Drain::Failed, 0, 0);
                }
            }
        }
    }

    /// Writes for the connection task, which counts its own writes (the hub counts its
    /// flushes once per batch). `wake` asks the task to come back and drain when the socket
    /// blocks; the task's own drain loop waits for writability instead, and must not be woken
    /// by itself or it would spin.
    fn write_counted(&self, st: &mut PeerState, wake: bool) -> Drain {
        let (result, frames, bytes) = self.write(st, true);
        self.metrics.messages_sent.inc_by(frames as u64);
        self.metrics.bytes_sent.inc_by(bytes as u64);
        if wake && result != Drain::Done {
            self.wake.notify_one();
        }
        result
    }
}

/// Whether a frame is news for this client, recording it as sent if so.
fn compressor_failed(st: &mut PeerState, e: &super::deflate::CompressError) {
    tracing::warn!(error = %e, "closing a connection whose compressor failed");
    st.closed = true;
}

/// Streams and their last seq, in subscription order; at most `--max-subscriptions` of them.
#[derive(Debug, Default)]
struct Subs(SmallVec<[(StreamId, u64); 2]>);

impl Subs {
    fn get_mut(&mut self, stream: &StreamId) -> Option<&mut u64> {
        self.0.iter_mut().find(|(s, _)| s == stream).map(|(_, q)| q)
    }

    /// The entry for `stream`, added with `from` if absent.
    fn entry(&mut self, stream: StreamId, from: u64) -> &mut u64 {
        let at = match self.0.iter().position(|(s, _)| *s == stream) {
            Some(at) => at,
            None => {
                self.0.push((stream, from));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    fn remove(&mut self, stream: &StreamId) -> bool {
        let found = self.0.iter().position(|(s, _)| s == stream);
        found.map(|at| self.0.remove(at)).is_some()
    }

    fn contains(&self, stream: &StreamId) -> bool {
        self.0.iter().any(|(s, _)| s == stream)
    }

    fn iter(&self) -> impl Iterator<Item = (StreamId, u64)> + '_ {
        self.0.iter().copied()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

fn accept(subs: &mut Subs, frame: &Frame) -> bool {
    match subs.get_mut(&frame.stream) {
        Some(last) if frame.seq > *last => {
            *last = frame.seq;
            true
        }
        _ => false,
    }
}

impl Outlet for Peer {
    fn id(&self) -> u64 {
        self.id
    }

    fn offer(&self, frame: &Frame, upcoming: Upcoming<'_>) -> Offer {
        let mut st = self.lock();
        if st.closed {
            return Offer::Closed;
        }
        if !accept(&mut st.subs, frame) {
            return Offer::Skipped;
        }
        if st.pending.len() >= self.capacity + st.allowance {
            st.dropped = Some(Dropped::SlowConsumer);
            drop(st);
            self.close_data();
            self.wake.notify_one();
            return Offer::Full;
        }
        // While held, the connection task writes (on release) and the hub must not count
        // this peer as flushed-on-batch-end: marking it corked would keep it off every later
        // batch's flush list.
        if st.hold {
            st.pending.push_back(Out::data(frame));
            return Offer::Queued { first: false };
        }
        if st.blocked || st.subs.iter().any(|(s, _)| upcoming.contains(s)) {
            st.pending.push_back(Out::data(frame));
            let first = !st.corked;
            st.corked = true;
            return Offer::Queued { first };
        }
        // Nothing more of this batch is for this client: write now, while its state is in
        // cache, rather than in a second pass over every subscriber.
        st.corked = false;
        let (result, frames, bytes) = if st.pending.is_empty() {
            self.write_one(&mut st, frame)
        } else {
            st.pending.push_back(Out::data(frame));
            self.write(&mut st, false)
        };
        if result != Drain::Done {
            self.wake.notify_one();
        }
        Offer::Sent { frames, bytes }
    }

    fn interrupt(&self) {
        self.lock().dropped.get_or_insert(Dropped::Interrupted);
        self.close_data();
        self.wake.notify_one();
    }

    fn status(&self, stream: StreamId, symbol: &str, live: bool) {
        let msg = super::protocol::ServerMessage::Status {
            channel: stream.channel(),
            symbol: symbol.to_string(),
            status: if live { "live" } else { "stale" },
        };
        // Queued behind what the client has not been sent yet; a blocked socket is already
        // the connection task's to drain.
        let _ = self.send(super::frame::text(&msg.to_json()));
    }

    fn flush(&self) -> (usize, usize) {
        let mut st = self.lock();
        st.corked = false;
        if st.hold || st.blocked || st.closed {
            return (0, 0);
        }
        let (result, frames, bytes) = self.write(&mut st, false);
        if result != Drain::Done {
            self.wake.notify_one();
        }
        (frames, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Frame, Offer, Outlet, StreamId, Upcoming};
    use crate::market::Channel;

    /// A connected pair on loopback with buffers as small as the kernel allows: the server
    /// side's writes block after a few KiB while the client reads nothing.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(1024).expect("rcvbuf");
        let client = socket.connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        SockRef::from(&server)
            .set_send_buffer_size(1024)
            .expect("sndbuf");
        (server, client)
    }

    #[tokio::test]
    async fn a_replay_does_not_count_against_the_live_queue() {
        let (server, _client) = pair().await;
        let peer = Peer::new(1, server, 16, Arc::new(Metrics::new()), None);
        let stream = StreamId::new(Channel::Ticker, 0);
        let frame = |seq: u64| Frame {
            stream,
            seq,
            ts: 0,
            wire: Bytes::from(vec![b'x'; 200]),
        };
        peer.hold(&[(stream, 0)]);
        peer.release(Bytes::from_static(b"ack"), (1..=300).map(frame).collect());
        let queued = peer.lock().pending.len();
        assert!(
            queued > 100,
            "the socket took only a few KiB: {queued} frames wait"
        );
        // Live updates on top of the client's own catch-up are queued, up to the usual bound...
        for seq in 301..=316 {
            assert!(
                matches!(
                    peer.offer(&frame(seq), Upcoming::NONE),
                    Offer::Queued { .. }
                ),
                "update {seq} was refused with {queued} replayed frames waiting"
            );
        }
        // ... and past it the client is a slow consumer as before.
        assert_eq!(peer.offer(&frame(317), Upcoming::NONE), Offer::Full);
    }
}
