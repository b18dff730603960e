//! AES-GCM (NIST SP 800-38D) with SRTP's 12-byte nonces and 16-byte tags (RFC 7714),
//! composed from the `ctr` and `ghash` crates the way `aes-gcm` composes them, plus the one
//! operation that crate lacks: sealing a payload from where it lies into the send buffer, so a
//! forwarded payload is read once and its ciphertext written once (no copy, then encrypt in
//! place). The tests check every operation against `aes-gcm`.

use aes::cipher::consts::U16;
use aes::cipher::{
    BlockCipher, BlockEncrypt, BlockSizeUser, InnerIvInit, KeyInit, StreamCipher, StreamCipherCore,
    StreamCipherCoreWrapper,
};
use ghash::GHash;
use ghash::universal_hash::UniversalHash;

type Block = aes::Block;
type Ctr<'a, A> = StreamCipherCoreWrapper<ctr::CtrCore<&'a A, ctr::flavors::Ctr32BE>>;

/// The tag did not authenticate the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unauthentic;

/// One AES-GCM key: the expanded cipher and the GHASH key `H = AES(K, 0)`, both computed once.
pub(super) struct Gcm<A> {
    cipher: A,
    ghash: GHash,
}

/// The AES block ciphers GCM runs on (both key lengths).
pub(super) trait GcmCipher:
    BlockCipher + BlockSizeUser<BlockSize = U16> + BlockEncrypt + KeyInit
{
}
impl<T: BlockCipher + BlockSizeUser<BlockSize = U16> + BlockEncrypt + KeyInit> GcmCipher for T {}

impl<A: GcmCipher> Gcm<A> {
    /// None if `key` has the wrong length for `A`.
    pub(super) fn new(key: &[u8]) -> Option<Self> {
        let cipher = A::new_from_slice(key).ok()?;
        let mut h = Block::default();
        cipher.encrypt_block(&mut h);
        Some(Gcm {
            cipher,
            ghash: GHash::new(&h),
        })
    }

    /// The keystream for `nonce` (starting at counter 2) and the tag mask `AES(K, J0)`.
    fn ctr(&self, nonce: &[u8; 12]) -> (Ctr<'_, A>, Block) {
        let mut j0 = Block::default();
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let mut core = ctr::CtrCore::inner_iv_init(&self.cipher, &j0);
        let mut mask = Block::default();
        core.write_keystream_block(&mut mask);
        (StreamCipherCoreWrapper::from_core(core), mask)
    }

    fn tag(&self, mask: &Block, aad: &[u8], ciphertext: &[u8]) -> [u8; 16] {
        let mut g = self.ghash.clone();
        g.update_padded(aad);
        g.update_padded(ciphertext);
        let mut lengths = Block::default();
        lengths[..8].copy_from_slice(&(aad.len() as u64 * 8).to_be_bytes());
        lengths[8..].copy_from_slice(&(ciphertext.len() as u64 * 8).to_be_bytes());
        g.update(&[lengths]);
        let mut tag: [u8; 16] = g.finalize().into();
        for (t, m) in tag.iter_mut().zip(mask.iter()) {
            *t ^= m;
        }
        tag
    }

    /// Encrypts `buf` in place; returns the tag over `aad` and the ciphertext.
    pub(super) fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let (mut ctr, mask) = self.ctr(nonce);
        ctr.apply_keystream(buf);
        self.tag(&mask, aad, buf)
    }

    /// Seals the plaintext `buf[aad..head] ++ src` into `buf[aad..head + src.len()]`, with
    /// `buf[..aad]` as associated data: the head is encrypted in place, `src` straight into
    /// the buffer. Returns the tag. `buf` must hold `head + src.len()` bytes.
    pub(super) fn seal_from(
        &self,
        nonce: &[u8; 12],
        buf: &mut [u8],
        aad: usize,
        head: usize,
        src: &[u8],
    ) -> [u8; 16] {
        let end = head + src.len();
        let (mut ctr, mask) = self.ctr(nonce);
        ctr.apply_keystream(&mut buf[aad..head]);
        // The keystream carries on across the two parts (the wrapper keeps a partial block).
        if ctr.apply_keystream_b2b(src, &mut buf[head..end]).is_err() {
            // Only on a length mismatch, which the slicing above rules out.
            return [0; 16];
        }
        let (a, c) = buf[..end].split_at(aad);
        self.tag(&mask, a, c)
    }

    /// Authenticates `aad` and `buf` against `tag`, then decrypts `buf` in place. A packet that
    /// fails is left as it was.
    pub(super) fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), Unauthentic> {
        let (mut ctr, mask) = self.ctr(nonce);
        let expected = self.tag(&mask, aad, buf);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err(Unauthentic);
        }
        ctr.apply_keystream(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aes::{Aes128Enc, Aes256Enc};
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit as _, Nonce};
    use proptest::prelude::*;

    use super::*;

    fn reference_seal(
        key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        plain: &[u8],
    ) -> (Vec<u8>, [u8; 16]) {
        let mut buf = plain.to_vec();
        let n = Nonce::from(*nonce);
        let tag = if key.len() == 16 {
            Aes128Gcm::new_from_slice(key)
                .unwrap()
                .encrypt_in_place_detached(&n, aad, &mut buf)
        } else {
            Aes256Gcm::new_from_slice(key)
                .unwrap()
                .encrypt_in_place_detached(&n, aad, &mut buf)
        }
        .unwrap();
        (buf, tag.into())
    }

    fn check(key: &[u8], nonce: [u8; 12], aad: &[u8], plain: &[u8], split: usize) {
        let (ct, tag) = reference_seal(key, &nonce, aad, plain);
        fn run<A: GcmCipher>(
            g: &Gcm<A>,
            nonce: [u8; 12],
            aad: &[u8],
            plain: &[u8],
            split: usize,
            ct: &[u8],
            tag: [u8; 16],
        ) {
            // In place.
            let mut buf = plain.to_vec();
            assert_eq!(g.seal_in_place(&nonce, aad, &mut buf), tag);
            assert_eq!(buf, ct);
            // Out of place: the first `split` bytes of the plaintext in the buffer, the rest
            // read from elsewhere; stale bytes in the destination must not matter.
            let mut out = vec![0xA5; aad.len() + plain.len() + 7];
            out[..aad.len()].copy_from_slice(aad);
            out[aad.len()..aad.len() + split].copy_from_slice(&plain[..split]);
            let t = g.seal_from(
                &nonce,
                &mut out,
                aad.len(),
                aad.len() + split,
                &plain[split..],
            );
            assert_eq!(t, tag);
            assert_eq!(&out[aad.len()..aad.len() + plain.len()], ct);
            // Open, and refuse a flipped tag bit or ciphertext bit without touching the data.
            let mut c = ct.to_vec();
            let mut bad = tag;
            bad[15] ^= 1;
            assert_eq!(g.open_in_place(&nonce, aad, &mut c, &bad), Err(Unauthentic));
            assert_eq!(c, ct);
            if !c.is_empty() {
                c[0] ^= 0x80;
                assert_eq!(g.open_in_place(&nonce, aad, &mut c, &tag), Err(Unauthentic));
                c[0] ^= 0x80;
            }
            g.open_in_place(&nonce, aad, &mut c, &tag).unwrap();
            assert_eq!(c, plain);
        }
        if key.len() == 16 {
            run(
                &Gcm::<Aes128Enc>::new(key).unwrap(),
                nonce,
                aad,
                plain,
                split,
                &ct,
                tag,
            );
        } else {
            run(
                &Gcm::<Aes256Enc>::new(key).unwrap(),
                nonce,
                aad,
                plain,
                split,
                &ct,
                tag,
            );
        }
    }

    #[test]
    fn wrong_key_lengths_are_refused() {
        assert!(Gcm::<Aes128Enc>::new(&[0; 32]).is_none());
        assert!(Gcm::<Aes256Enc>::new(&[0; 16]).is_none());
    }

    #[test]
    fn edges_match_aes_gcm() {
        let key16 = [7u8; 16];
        let key32 = [9u8; 32];
        for key in [&key16[..], &key32[..]] {
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 127, 128, 129, 1200] {
                let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                for split in [0, len / 2, len] {
                    check(key, [3; 12], b"header bytes", &plain, split);
                }
            }
            check(key, [0; 12], b"", b"", 0);
        }
    }

    proptest! {
        #[test]
        fn any_input_matches_aes_gcm(
            key in prop::collection::vec(any::<u8>(), 16..=16),
            wide in any::<bool>(),
            nonce in any::<[u8; 12]>(),
            aad in prop::collection::vec(any::<u8>(), 0..64),
            plain in prop::collection::vec(any::<u8>(), 0..300),
            split in any::<prop::sample::Index>(),
        ) {
            let key = if wide { [key.clone(), key].concat() } else { key };
            let split = split.index(plain.len() + 1);
            check(&key, nonce, &aad, &plain, split);
        }
    }
}
