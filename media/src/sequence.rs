//! One subscriber's view of a track as a single continuous RTP stream: sequence numbers and
//! timestamps stay contiguous across mutes, source switches (simulcast layer changes) and
//! publisher restarts, as a decoder expects.

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
    /// out_ext = in_ext + seq_offset (mod 2^64); out_ts = in_ts + ts_offset (mod 2^32).
    seq_offset: u64,
    ts_offset: u32,
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
            });
            self.rebase = false;
        }
        let seg = self.source.as_mut()?;
        let in_ext = extend(seg.highest_in, seq);
        if in_ext < seg.start_in {
            return None;
        }
        seg.highest_in = seg.highest_in.max(in_ext);
        let out_seq = in_ext.wrapping_add(seg.seq_offset);
        let out_ts = ts.wrapping_add(seg.ts_offset);
        if self.last_out.is_none_or(|(s, _)| out_seq > s) {
            self.last_out = Some((out_seq, out_ts));
        }
        Some((out_seq as u16, out_ts))
    }
}

impl SequenceRewriter {
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
        let in_ext = out_ext.wrapping_sub(seg.seq_offset);
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
    fn extend_handles_wrap_both_ways() {
        assert_eq!(extend(0x1_FFFE, 1), 0x2_0001);
        assert_eq!(extend(0x2_0001, 0xFFFE), 0x1_FFFE);
        assert_eq!(extend(5, 7), 7);
    }
}
