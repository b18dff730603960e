//! Model → SDP text, CRLF line endings, in the attribute order browsers write.

use std::fmt::Write;

use super::*;

pub(super) fn write(sd: &SessionDescription) -> String {
    let mut out = String::with_capacity(2048 + 1024 * sd.media.len());
    let o = &sd.origin;
    line(&mut out, format_args!("v=0"));
    line(
        &mut out,
        format_args!(
            "o={} {} {} {} {} {}",
            o.username, o.session_id, o.session_version, o.net_type, o.addr_type, o.address
        ),
    );
    line(&mut out, format_args!("s={}", sd.session_name));
    if let Some(c) = &sd.connection {
        connection(&mut out, c);
    }
    for b in &sd.bandwidths {
        line(&mut out, format_args!("b={}:{}", b.kind, b.value));
    }
    line(&mut out, format_args!("t={} {}", sd.timing.0, sd.timing.1));
    if sd.ice_lite {
        line(&mut out, format_args!("a=ice-lite"));
    }
    for g in &sd.groups {
        out.push_str("a=group:");
        out.push_str(&g.semantics);
        for m in &g.mids {
            out.push(' ');
            out.push_str(m);
        }
        out.push_str("\r\n");
    }
    if let Some(ms) = &sd.msid_semantic {
        line(&mut out, format_args!("a=msid-semantic:{ms}"));
    }
    common(&mut out, &sd.attributes, |_| {});
    for m in &sd.media {
        media(&mut out, m);
    }
    out
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = out.write_fmt(args);
    out.push_str("\r\n");
}

fn connection(out: &mut String, c: &Connection) {
    line(
        out,
        format_args!("c={} {} {}", c.net_type, c.addr_type, c.address),
    );
}

/// Writes the common attributes; `before_extmaps` lets a media section put its mid first.
fn common(out: &mut String, a: &CommonAttributes, before_extmaps: impl FnOnce(&mut String)) {
    if let Some(u) = &a.ice_ufrag {
        line(out, format_args!("a=ice-ufrag:{u}"));
    }
    if let Some(p) = &a.ice_pwd {
        line(out, format_args!("a=ice-pwd:{p}"));
    }
    if let Some(o) = &a.ice_options {
        line(out, format_args!("a=ice-options:{o}"));
    }
    for f in &a.fingerprints {
        line(out, format_args!("a=fingerprint:{f}"));
    }
    if let Some(s) = a.setup {
        line(out, format_args!("a=setup:{}", s.as_str()));
    }
    before_extmaps(out);
    if a.extmap_allow_mixed {
        line(out, format_args!("a=extmap-allow-mixed"));
    }
    for e in &a.extmaps {
        out.push_str("a=extmap:");
        let _ = write!(out, "{}", e.id);
        if let Some(d) = e.direction {
            out.push('/');
            out.push_str(d.as_str());
        }
        out.push(' ');
        out.push_str(&e.uri);
        if let Some(at) = &e.attributes {
            out.push(' ');
            out.push_str(at);
        }
        out.push_str("\r\n");
    }
    if let Some(d) = a.direction {
        line(out, format_args!("a={}", d.as_str()));
    }
    for at in &a.other {
        match &at.value {
            Some(v) => line(out, format_args!("a={}:{v}", at.name)),
            None => line(out, format_args!("a={}", at.name)),
        }
    }
}

fn media(out: &mut String, m: &MediaDescription) {
    out.push_str("m=");
    out.push_str(&m.kind);
    let _ = write!(out, " {}", m.port);
    if let Some(n) = m.num_ports {
        let _ = write!(out, "/{n}");
    }
    out.push(' ');
    out.push_str(&m.protocol);
    for f in &m.formats {
        out.push(' ');
        out.push_str(f);
    }
    out.push_str("\r\n");
    if let Some(c) = &m.connection {
        connection(out, c);
    }
    for b in &m.bandwidths {
        line(out, format_args!("b={}:{}", b.kind, b.value));
    }
    for c in &m.candidates {
        out.push_str("a=candidate:");
        candidate_value(out, c);
        out.push_str("\r\n");
    }
    if m.end_of_candidates {
        line(out, format_args!("a=end-of-candidates"));
    }
    common(out, &m.attributes, |out| {
        if let Some(mid) = &m.mid {
            line(out, format_args!("a=mid:{mid}"));
        }
    });
    if m.bundle_only {
        line(out, format_args!("a=bundle-only"));
    }
    for msid in &m.msid {
        line(out, format_args!("a=msid:{msid}"));
    }
    if m.rtcp_mux {
        line(out, format_args!("a=rtcp-mux"));
    }
    if m.rtcp_mux_only {
        line(out, format_args!("a=rtcp-mux-only"));
    }
    if m.rtcp_rsize {
        line(out, format_args!("a=rtcp-rsize"));
    }
    // Per codec: rtpmap, its rtcp-fb, its fmtp; then whatever names no mapped payload type.
    let mapped = |pt: u8| m.rtpmaps.iter().any(|r| r.pt == pt);
    for (i, r) in m.rtpmaps.iter().enumerate() {
        match r.channels {
            Some(ch) => line(
                out,
                format_args!("a=rtpmap:{} {}/{}/{ch}", r.pt, r.encoding, r.clock_rate),
            ),
            None => line(
                out,
                format_args!("a=rtpmap:{} {}/{}", r.pt, r.encoding, r.clock_rate),
            ),
        }
        // A payload type mapped twice gets its feedback and fmtp under the first mapping only.
        if m.rtpmaps[..i].iter().any(|x| x.pt == r.pt) {
            continue;
        }
        for fb in m.rtcp_fbs.iter().filter(|fb| fb.pt == Some(r.pt)) {
            rtcp_fb(out, fb);
        }
        for f in m.fmtps.iter().filter(|f| f.pt == r.pt) {
            fmtp(out, f);
        }
    }
    for fb in m
        .rtcp_fbs
        .iter()
        .filter(|fb| fb.pt.is_none_or(|p| !mapped(p)))
    {
        rtcp_fb(out, fb);
    }
    for f in m.fmtps.iter().filter(|f| !mapped(f.pt)) {
        fmtp(out, f);
    }
    for g in &m.ssrc_groups {
        out.push_str("a=ssrc-group:");
        out.push_str(&g.semantics);
        for s in &g.ssrcs {
            let _ = write!(out, " {s}");
        }
        out.push_str("\r\n");
    }
    for s in &m.ssrcs {
        match &s.value {
            Some(v) => line(out, format_args!("a=ssrc:{} {}:{v}", s.ssrc, s.attribute)),
            None => line(out, format_args!("a=ssrc:{} {}", s.ssrc, s.attribute)),
        }
    }
    for r in &m.rids {
        match &r.restrictions {
            Some(x) => line(
                out,
                format_args!("a=rid:{} {} {x}", r.id, r.direction.as_str()),
            ),
            None => line(out, format_args!("a=rid:{} {}", r.id, r.direction.as_str())),
        }
    }
    if let Some(sc) = &m.simulcast {
        out.push_str("a=simulcast:");
        let mut first = true;
        for (dir, list) in [("send", &sc.send), ("recv", &sc.recv)] {
            if list.is_empty() {
                continue;
            }
            if !first {
                out.push(' ');
            }
            first = false;
            out.push_str(dir);
            out.push(' ');
            for (i, alts) in list.iter().enumerate() {
                if i > 0 {
                    out.push(';');
                }
                for (j, s) in alts.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    if s.paused {
                        out.push('~');
                    }
                    out.push_str(&s.rid);
                }
            }
        }
        out.push_str("\r\n");
    }
}

fn rtcp_fb(out: &mut String, fb: &RtcpFb) {
    out.push_str("a=rtcp-fb:");
    match fb.pt {
        Some(pt) => {
            let _ = write!(out, "{pt}");
        }
        None => out.push('*'),
    }
    out.push(' ');
    out.push_str(&fb.kind);
    if let Some(p) = &fb.param {
        out.push(' ');
        out.push_str(p);
    }
    out.push_str("\r\n");
}

fn fmtp(out: &mut String, f: &Fmtp) {
    if f.params.is_empty() {
        line(out, format_args!("a=fmtp:{}", f.pt));
    } else {
        line(out, format_args!("a=fmtp:{} {}", f.pt, f.params));
    }
}

/// The `candidate-attribute` value (no `a=candidate:` prefix).
pub(crate) fn candidate_value(out: &mut String, c: &Candidate) {
    let _ = write!(
        out,
        "{} {} {} {} {} {} typ {}",
        c.foundation, c.component, c.transport, c.priority, c.address, c.port, c.typ
    );
    if let Some(a) = &c.raddr {
        let _ = write!(out, " raddr {a}");
    }
    if let Some(p) = c.rport {
        let _ = write!(out, " rport {p}");
    }
    for (k, v) in &c.extensions {
        let _ = write!(out, " {k} {v}");
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        candidate_value(&mut s, self);
        f.write_str(&s)
    }
}
