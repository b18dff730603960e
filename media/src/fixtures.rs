//! Ready-made configurations for tests, benchmarks and fuzz targets: a VP8 track as Chromium
//! publishes it and a subscription as Chromium answers it. The server never uses these.

use ringcast_types::CodecName;
use ringcast_types::TransportId;

use crate::router::{
    EncodingConfig, ForwardedExt, RtxConfig, SubscriptionConfig, TrackConfig, TrackId,
};

/// The publisher's payload types and extension ids.
pub const VP8_PT: u8 = 96;
pub const VP8_RTX_PT: u8 = 97;
pub const MID_EXT: u8 = 4;
pub const RID_EXT: u8 = 10;
pub const RRID_EXT: u8 = 11;
pub const ABS_SEND_TIME_EXT: u8 = 2;
pub const TRANSPORT_CC_EXT: u8 = 3;
/// The subscriber's payload types and abs-send-time id.
pub const SUB_PT: u8 = 100;
pub const SUB_RTX_PT: u8 = 101;
pub const SUB_ABS_SEND_TIME_EXT: u8 = 7;

/// A VP8 track with RTX, MID "1", abs-send-time forwarded, and transport-wide sequence numbers
/// negotiated (`TRANSPORT_CC_EXT`).
pub fn vp8_track(
    id: TrackId,
    publisher: TransportId,
    encodings: Vec<EncodingConfig>,
) -> TrackConfig {
    TrackConfig {
        id,
        publisher,
        codec: CodecName::Vp8,
        clock_rate: 90_000,
        payload_type: VP8_PT,
        rtx_payload_type: Some(VP8_RTX_PT),
        mid: "1".into(),
        mid_ext: Some(MID_EXT),
        rid_ext: Some(RID_EXT),
        rrid_ext: Some(RRID_EXT),
        transport_cc_ext: Some(TRANSPORT_CC_EXT),
        source: Default::default(),
        forwarded_exts: vec![(ABS_SEND_TIME_EXT, ForwardedExt::AbsSendTime)],
        encodings,
    }
}

/// One signalled encoding (no simulcast).
pub fn single(ssrc: u32, rtx_ssrc: Option<u32>) -> Vec<EncodingConfig> {
    vec![EncodingConfig {
        rid: None,
        ssrc: Some(ssrc),
        rtx_ssrc,
    }]
}

/// A subscription with abs-send-time, and with RTX on `ssrc + 1` when `rtx`.
pub fn subscription(
    track: TrackId,
    subscriber: TransportId,
    ssrc: u32,
    rtx: bool,
) -> SubscriptionConfig {
    SubscriptionConfig {
        track,
        subscriber,
        ssrc,
        payload_type: SUB_PT,
        rtx: rtx.then_some(RtxConfig {
            ssrc: ssrc + 1,
            payload_type: SUB_RTX_PT,
        }),
        exts: vec![(ForwardedExt::AbsSendTime, SUB_ABS_SEND_TIME_EXT)],
        transport_cc_ext: None,
        settings: Default::default(),
    }
}
