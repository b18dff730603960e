//! One subscriber's view of a track as a single continuous RTP stream: sequence numbers and
//! timestamps stay contiguous across mutes, source switches (simulcast layer changes) and
//! publisher restarts, as a decoder expects, and sequence numbers across the packets it is not
//! sent (temporal layers above the one it gets).

/// Maps source (SSRC, sequence, timestamp) onto the subscriber's output numbering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceRewriter {
    /// Output of the last packet forwarded (extended sequence, timestamp).
    last_out: Option<(u64, u32)>,
    /// Current source segment: SSRC, extended input sequence at its start, highest so far.
    source: Option<Segment>,
    /// The next packet starts a new segment (after a mute or an explicit switch).
    rebase: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    ssrc: u32,
    start_in: u64,
    highest_in: u64,
    /// out_ext = in_ext + seq_offset (mod 2^64) for packets past the newest skip (older ones
    /// add back the skips above them); out_ts = in_ts + ts_offset (mod 2^32).
    seq_offset: u64,
    ts_offset: u32,
    skips: Skips,
}

/// Runs of consecutive numbers left out of an output numbering (in the input's extended
/// numbers, ascending), the newest `SKIP_RUNS` of them: a number maps to the output with one
/// less for each skipped number below it. Fixed size, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Skips {
    /// (first, last) of each run, oldest first, `len` of them.
    runs: [(u64, u64); SKIP_RUNS],
    len: usize,
    /// The first of the newest run pushed out: below it, how many were skipped is no longer
    /// known.
    forgotten_below: Option<u64>,
}

/// Runs remembered: a whole frame is one run, so this is some seconds of dropped frames.
const SKIP_RUNS: usize = 32;

impl Skips {
    /// Leaves `x` out; it must be newer than every number seen (`false`, and nothing is
    /// recorded, if it is not above the newest run).
    pub(crate) fn skip(&mut self, x: u64) -> bool {
        if let Some(last) = self.runs[..self.len].last_mut() {
            if x <= last.1 {
                return false;
            }
            if x == last.1 + 1 {
                last.1 = x;
                return true;
            }
        }
        if self.len == SKIP_RUNS {
            self.forgotten_below = Some(self.runs[0].1 + 1);
            self.runs.copy_within(1.., 0);
            self.len -= 1;
        }
        self.runs[self.len] = (x, x);
        self.len += 1;
        true
    }

    /// How many numbers above `x` were skipped (what a number at `x` adds back to the
    /// current offset), or `None` when it is too old to know or was skipped itself.
    pub(crate) fn above(&self, x: u64) -> Option<u64> {
        if self.forgotten_below.is_some_and(|f| x < f) {
            return None;
        }
        let mut n = 0;
        for &(first, last) in self.runs[..self.len].iter().rev() {
            if x > last {
                break;
            }
            if x >= first {
                return None;
            }
            n += last - first + 1;
        }
        Some(n)
    }

    /// The input number that maps to output `out` under `offset` (the current one, every
    /// skip applied): out = in + offset + above(in).
    pub(crate) fn source(&self, out: u64, offset: u64) -> Option<u64> {
        let mut added = 0u64;
        for &(first, last) in self.runs[..self.len].iter().rev() {
            let x = out.wrapping_sub(offset).wrapping_sub(added);
            if x > last {
                return Some(x);
            }
            added += last - first + 1;
        }
        let x = out.wrapping_sub(offset).wrapping_sub(added);
        (self.forgotten_below.is_none_or(|f| x >= f)).then_some(x)
    }
}

/// Extends a 16-bit sequence number against the highest extended one seen (RFC 3550 A.1).
pub fn extend(highest: u64, seq: u16) -> u64 {
    let base = highest & !0xFFFF;
    let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
    candidates
        .into_iter()
        .map(|b| b | u64::from(seq))
        .filter(|c| *c < (1 << 48))
        .min_by_key(|c| c.abs_diff(highest))
        .unwrap_or(u64::from(seq))
}

impl SequenceRewriter {
    /// The next packet continues the output after a gap (mute, layer switch).
    pub fn rebase(&mut self) {
        self.rebase = true;
    }

    /// Output (sequence, timestamp) for a source packet, or `None` to drop it (it is older than
    /// the current segment, so its place in the output is taken). `elapsed_ts` is the time since
    /// the last forwarded packet in the codec's clock units, used to space timestamps at a
    /// segment start. The caller passes only the source it forwards (one simulcast layer); a
    /// packet with another SSRC starts a new segment.
    pub fn rewrite(&mut self, ssrc: u32, seq: u16, ts: u32, elapsed_ts: u32) -> Option<(u16, u32)> {
        let new_segment = self.rebase || self.source.is_none_or(|s| s.ssrc != ssrc);
        if new_segment {
            let in_ext = u64::from(seq) | (1 << 32); // room below for late packets
            let (seq_offset, ts_offset) = match self.last_out {
                Some((out_seq, out_ts)) => (
                    (out_seq + 1).wrapping_sub(in_ext),
                    out_ts.wrapping_add(elapsed_ts.max(1)).wrapping_sub(ts),
                ),
                None => (0u64.wrapping_sub(in_ext) + u64::from(seq), 0),
            };
            self.source = Some(Segment {
                ssrc,
                start_in: in_ext,
                highest_in: in_ext,
                seq_offset,
                ts_offset,
                skips: Skips::default(),
            });
            self.rebase = false;
        }
        let seg = self.source.as_mut()?;
        let in_ext = extend(seg.highest_in, seq);
        if in_ext < seg.start_in {
            return None;
        }
        seg.highest_in = seg.highest_in.max(in_ext);
        let out_seq = in_ext
            .wrapping_add(seg.seq_offset)
            .wrapping_add(seg.skips.above(in_ext)?);
        let out_ts = ts.wrapping_add(seg.ts_offset);
        if self.last_out.is_none_or(|(s, _)| out_seq > s) {
            self.last_out = Some((out_seq, out_ts));
        }
        Some((out_seq as u16, out_ts))
    }
}

impl SequenceRewriter {
    /// Leaves a packet of the current source out of the output: the numbers after it close
    /// up. Only the newest packet can be left out this way (a late one keeps the place it
    /// was given, a hole the subscriber's NACK for finds nothing to send); a packet of
    /// another source, or when a new segment is due, is simply not forwarded.
    pub fn skip(&mut self, ssrc: u32, seq: u16) {
        if self.rebase {
            return;
        }
        let Some(seg) = self.source.as_mut().filter(|s| s.ssrc == ssrc) else {
            return;
        };
        let in_ext = extend(seg.highest_in, seq);
        if in_ext <= seg.highest_in {
            return;
        }
        if seg.skips.skip(in_ext) {
            seg.highest_in = in_ext;
            seg.seq_offset = seg.seq_offset.wrapping_sub(1);
        }
    }

    /// The output timestamp of a current-segment source timestamp.
    pub fn timestamp_of(&self, in_ts: u32) -> Option<u32> {
        self.source.map(|s| in_ts.wrapping_add(s.ts_offset))
    }

    /// The output sequence number of the newest packet forwarded.
    pub fn last_out_seq(&self) -> Option<u16> {
        self.last_out.map(|(s, _)| s as u16)
    }

    /// The source (SSRC, extended sequence) an output sequence number was made from, if it is
    /// in the current segment: how a subscriber's NACK finds the packet in the track history.
    pub fn source_of(&self, out_seq: u16) -> Option<(u32, u64)> {
        let (last, _) = self.last_out?;
        let seg = self.source?;
        let out_ext = extend(last, out_seq);
        let in_ext = seg.skips.source(out_ext, seg.seq_offset)?;
        (in_ext >= seg.start_in && in_ext <= seg.highest_in).then_some((seg.ssrc, in_ext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut SequenceRewriter, packets: &[(u32, u16, u32)]) -> Vec<Option<(u16, u32)>> {
        packets
            .iter()
            .map(|&(ssrc, seq, ts)| r.rewrite(ssrc, seq, ts, 3000))
            .collect()
    }

    #[test]
    fn first_source_passes_through() {
        let mut r = SequenceRewriter::default();
        let out = run(
            &mut r,
            &[
                (1, 100, 1000),
                (1, 101, 4000),
                (1, 103, 10000),
                (1, 102, 7000),
            ],
        );
        assert_eq!(
            out,
            [
                Some((100, 1000)),
                Some((101, 4000)),
                Some((103, 10000)),
                Some((102, 7000))
            ],
            "reordering is preserved"
        );
    }

    #[test]
    fn source_switch_continues_numbering() {
        let mut r = SequenceRewriter::default();
        run(&mut r, &[(1, 100, 1000), (1, 101, 4000)]);
        // A new SSRC with unrelated numbering (e.g. another simulcast layer).
        let out = run(&mut r, &[(2, 50000, 777), (2, 50001, 3777)]);
        assert_eq!(out, [Some((102, 7000)), Some((103, 10000))]);
        // A late packet of the new source from before its first one: no place left, dropped.
        assert_eq!(r.rewrite(2, 49999, 0, 0), None);
    }

    #[test]
    fn mute_then_unmute_is_contiguous() {
        let mut r = SequenceRewriter::default();
        run(&mut r, &[(1, 10, 100), (1, 11, 200)]);
        r.rebase();
        // The publisher kept sending while muted: seq jumped to 500.
        let out = r.rewrite(1, 500, 90_000, 48_000);
        assert_eq!(
            out,
            Some((12, 48_200)),
            "next number, timestamp advanced by the gap"
        );
        assert_eq!(r.rewrite(1, 501, 90_960, 960), Some((13, 49_160)));
    }

    #[test]
    fn wraps_around_16_bits() {
        let mut r = SequenceRewriter::default();
        let out = run(
            &mut r,
            &[(1, 65534, 0), (1, 65535, 1), (1, 0, 2), (1, 1, 3)],
        );
        assert_eq!(
            out,
            [
                Some((65534, 0)),
                Some((65535, 1)),
                Some((0, 2)),
                Some((1, 3))
            ]
        );
        // Switch after the wrap continues from 2.
        assert_eq!(r.rewrite(9, 7, 0, 10), Some((2, 13)));
    }

    #[test]
    fn nacked_output_numbers_map_back_to_the_source() {
        let mut r = SequenceRewriter::default();
        run(&mut r, &[(1, 100, 0), (1, 101, 1)]);
        run(&mut r, &[(2, 65535, 0), (2, 0, 1), (2, 1, 2)]);
        // Output 102..=104 came from source 2's 65535, 0, 1.
        let (ssrc, a) = r.source_of(102).unwrap();
        let (_, b) = r.source_of(103).unwrap();
        assert_eq!(ssrc, 2);
        assert_eq!(b, a + 1, "across the source's wrap");
        assert_eq!(a as u16, 65535);
        assert_eq!(r.source_of(100), None, "previous segment");
        assert_eq!(r.source_of(105), None, "not sent yet");
    }

    #[test]
    fn skipped_packets_close_up_and_nacks_still_map_back() {
        let mut r = SequenceRewriter::default();
        run(&mut r, &[(1, 100, 0), (1, 101, 0)]);
        // 102-103 a dropped frame, 104 sent, 105 lost upstream, 106-107 dropped, 108 sent.
        r.skip(1, 102);
        r.skip(1, 103);
        assert_eq!(r.rewrite(1, 104, 3, 0), Some((102, 3)));
        r.skip(1, 106);
        r.skip(1, 107);
        assert_eq!(r.rewrite(1, 108, 9, 0), Some((104, 9)));
        // 105 comes late (repaired): the place it left, between 104 and 108.
        assert_eq!(r.rewrite(1, 105, 6, 0), Some((103, 6)));
        assert_eq!(r.last_out_seq(), Some(104));
        // A late packet of a dropped frame stays out: not skipped again, no number.
        r.skip(1, 103);
        assert_eq!(r.rewrite(1, 109, 12, 0), Some((105, 12)));
        let back: Vec<_> = (100..=105)
            .map(|o| r.source_of(o).map(|s| s.1 as u16))
            .collect();
        assert_eq!(
            back,
            [
                Some(100),
                Some(101),
                Some(104),
                Some(105),
                Some(108),
                Some(109)
            ]
        );
        // A switch starts clean.
        r.rebase();
        assert_eq!(r.rewrite(2, 7, 0, 10), Some((106, 22)));
        assert_eq!(r.source_of(106).map(|s| s.1 as u16), Some(7));
    }

    #[test]
    fn skip_runs_past_what_is_remembered_are_not_guessed() {
        let mut r = SequenceRewriter::default();
        r.rewrite(1, 0, 0, 0);
        // Every other packet dropped, far more runs than are kept.
        for i in 0..100u16 {
            r.skip(1, 2 * i + 1);
            assert_eq!(r.rewrite(1, 2 * i + 2, 0, 0), Some((i + 1, 0)));
        }
        assert_eq!(r.source_of(100).map(|s| s.1), Some(200 | (1 << 32)));
        assert_eq!(r.source_of(1), None, "its skips were forgotten");
        // A late packet from then is not given a number that may be taken.
        assert_eq!(r.rewrite(1, 2, 0, 0), None);
    }

    #[test]
    fn extend_handles_wrap_both_ways() {
        assert_eq!(extend(0x1_FFFE, 1), 0x2_0001);
        assert_eq!(extend(0x2_0001, 0xFFFE), 0x1_FFFE);
        assert_eq!(extend(5, 7), 7);
    }
}
