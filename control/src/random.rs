//! Random strings from OpenSSL's CSPRNG (already linked for DTLS), for ids and ICE credentials.

/// `n` characters drawn uniformly from `alphabet` (rejection sampling: no modulo bias).
pub(crate) fn random_chars(alphabet: &[u8], n: usize) -> String {
    debug_assert!(!alphabet.is_empty() && alphabet.len() <= 256);
    // Largest multiple of the alphabet size that fits in a byte; bytes at or above it are redrawn.
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        fill(&mut buf);
        for &b in &buf {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// Fills `buf` from the CSPRNG.
pub(crate) fn fill(buf: &mut [u8]) {
    // OpenSSL's RAND_bytes fails only if the OS entropy source is unavailable; running without
    // a CSPRNG would issue guessable credentials, so that is a fatal condition.
    #[allow(clippy::expect_used)]
    openssl::rand::rand_bytes(buf).expect("OpenSSL CSPRNG unavailable");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_every_symbol_and_only_those() {
        let s = random_chars(b"ab", 4000);
        assert_eq!(s.len(), 4000);
        let a = s.bytes().filter(|&b| b == b'a').count();
        assert!(s.bytes().all(|b| b == b'a' || b == b'b'));
        // Binomial(4000, 0.5): 6 sigma is ±190.
        assert!((1810..=2190).contains(&a), "{a}");
    }
}
