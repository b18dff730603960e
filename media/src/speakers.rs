//! Who is speaking: the RFC 6464 audio level each audio packet carries (0 = 0 dBov, loudest, to
//! 127 = silence), folded per track into a smoothed level that is sampled every
//! [`SPEAKER_INTERVAL`]. Sans-IO: packets and ticks in, levels out.

use std::time::Duration;

/// How often levels are sampled (and active speakers may change).
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(200);
/// Quieter than this (in -dBov) is background, not speech.
pub const SPEECH_DBOV: u8 = 45;
/// A track speaks in an interval when at least this share of its packets carried speech.
pub const SPEECH_SHARE: f32 = 0.3;
/// Weight of the newest interval in the smoothed level (~500 ms memory at 200 ms intervals).
pub const SMOOTHING: f32 = 0.4;
/// Smoothed levels below this are silence.
pub const ACTIVE_LEVEL: f32 = 0.005;

/// The level meter of one audio track.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LevelMeter {
    packets: u32,
    speech: u32,
    /// Sum of linear amplitudes (10^(-dBov/20)) of the speech packets.
    amplitude: f32,
    smoothed: f32,
}

/// Linear amplitude of a level in -dBov: 1.0 at 0 dBov.
fn amplitude(dbov: u8) -> f32 {
    10f32.powf(-f32::from(dbov.min(127)) / 20.0)
}

impl LevelMeter {
    /// The audio-level extension's byte: V flag (voice activity, ignored) and the level.
    pub fn add(&mut self, ext_byte: u8) {
        let dbov = ext_byte & 0x7F;
        self.packets += 1;
        if dbov <= SPEECH_DBOV {
            self.speech += 1;
            self.amplitude += amplitude(dbov);
        }
    }

    /// Closes an interval: the smoothed level, 0.0 (silence) to 1.0.
    pub fn sample(&mut self) -> f32 {
        let speaking = self.packets > 0 && self.speech as f32 >= SPEECH_SHARE * self.packets as f32;
        let level = if speaking {
            self.amplitude / self.speech as f32
        } else {
            0.0
        };
        self.smoothed = SMOOTHING * level + (1.0 - SMOOTHING) * self.smoothed;
        if self.smoothed < ACTIVE_LEVEL / 10.0 {
            self.smoothed = 0.0;
        }
        self.packets = 0;
        self.speech = 0;
        self.amplitude = 0.0;
        self.smoothed
    }

    pub fn is_active(&self) -> bool {
        self.smoothed >= ACTIVE_LEVEL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_rises_and_silence_decays() {
        let mut m = LevelMeter::default();
        for _ in 0..10 {
            m.add(0x80 | 20); // -20 dBov
        }
        let first = m.sample();
        assert!((first - SMOOTHING * 0.1).abs() < 1e-4, "{first}");
        assert!(m.is_active());
        for _ in 0..3 {
            for _ in 0..10 {
                m.add(20);
            }
            m.sample();
        }
        let loud = m.sample_after(&[20; 10]);
        assert!(loud > 0.08 && loud <= 0.1, "{loud}");
        let mut quiet = loud;
        for _ in 0..20 {
            quiet = m.sample_after(&[127; 10]);
        }
        assert_eq!(quiet, 0.0);
        assert!(!m.is_active());
    }

    #[test]
    fn background_noise_and_rare_clicks_are_not_speech() {
        let mut m = LevelMeter::default();
        assert_eq!(m.sample_after(&[60; 10]), 0.0, "-60 dBov hum");
        let mut clicks = [127u8; 10];
        clicks[0] = 10;
        clicks[1] = 10;
        assert_eq!(m.sample_after(&clicks), 0.0, "2 of 10 packets");
        assert_eq!(m.sample(), 0.0, "no packets at all");
    }

    impl LevelMeter {
        fn sample_after(&mut self, levels: &[u8]) -> f32 {
            for &l in levels {
                self.add(l);
            }
            self.sample()
        }
    }
}
