//! Shared fixtures for Ringcast's benchmarks (`cargo bench -p ringcast-benches`).

/// A plaintext RTP packet of `len` bytes (12-byte header, SSRC 0x1234, payload type 96).
pub fn rtp_packet(seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234u32.to_be_bytes());
    p.resize(len, 0xA5);
    p
}
