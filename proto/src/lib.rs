//! Ringcast's public API, `ringcast.v1`: the generated messages, clients and servers.
//!
//! Generated code, and the codec it uses; the control plane converts these wire types into its
//! domain types at its boundary. The `.proto` source is in `proto/ringcast/v1/`.

/// `ringcast.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("ringcast.v1");
}

/// The generated services' codec: prost, with smaller encode buffers than tonic's default.
///
/// Each response stream keeps its encode buffer for its lifetime: tonic starts it at 8 KiB and
/// fills it up to 32 KiB before it yields when many messages are ready, which a join storm's
/// `Events` are. With one `Events` stream per participant that was ~14 KiB per participant
/// for the rest of the session; messages here are small, so 512 B growing to a 4 KiB batch
/// costs nothing in throughput.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    /// Initial encode buffer, and the batch a stream yields at.
    const ENCODE: (usize, usize) = (512, 4 * 1024);

    #[derive(Debug, Clone)]
    pub struct SmallBufCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for SmallBufCodec<T, U> {
        fn default() -> Self {
            SmallBufCodec(PhantomData)
        }
    }

    impl<T, U> Codec for SmallBufCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE.0, ENCODE.1))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
        }
    }
}

/// Path of the `.proto` files, for clients generated in other languages.
pub const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
