//! A small seeded generator (xorshift64*): a run's ICE credentials, SSRCs and tie-breakers come
//! from `--seed`, so two runs with one seed set up the same sessions. Not for secrets.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A non-zero SSRC.
    pub fn ssrc(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32 | 1
    }

    /// `n` characters of ICE-safe text (RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/").
    pub fn token(&mut self, n: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n)
            .map(|_| CHARS[(self.next_u64() % CHARS.len() as u64) as usize] as char)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_distinct() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.token(24), b.token(24));
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
        assert_eq!(a.token(8).len(), 8);
        assert_ne!(a.ssrc(), 0);
    }
}
