//! SDP text → model. Every error names the line it found wrong.

use super::*;

/// Parses an SDP. Lines may end in CRLF or LF; unknown attributes are kept, unknown line types
/// (`i=`, `u=`, `e=`, `p=`, `z=`, `k=`, `r=`) are skipped as RFC 8866 allows.
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    if text.len() > MAX_SDP_BYTES {
        return Err(SdpError::TooLarge(text.len()));
    }
    if text.trim().is_empty() {
        return Err(SdpError::Empty);
    }
    let mut p = Parser::default();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        p.line(line).map_err(|reason| SdpError::Line {
            line: i + 1,
            text: line.chars().take(80).collect(),
            reason,
        })?;
    }
    p.finish()
}

#[derive(Default)]
struct Parser {
    seen_version: bool,
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    timing: Option<(u64, u64)>,
    ice_lite: bool,
    groups: Vec<Group>,
    msid_semantic: Option<String>,
    attributes: CommonAttributes,
    media: Vec<MediaDescription>,
}

type R<T> = Result<T, String>;

impl Parser {
    fn line(&mut self, line: &str) -> R<()> {
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err("expected `<letter>=<value>`".into());
        }
        let kind = bytes[0] as char;
        let value = &line[2..];
        if !self.seen_version {
            if kind != 'v' {
                return Err("the first line must be `v=0`".into());
            }
            if value != "0" {
                return Err("only SDP version 0 exists".into());
            }
            self.seen_version = true;
            return Ok(());
        }
        match kind {
            'v' => Err("`v=` appears twice".into()),
            'o' => {
                if self.origin.is_some() {
                    return Err("`o=` appears twice".into());
                }
                self.origin = Some(origin(value)?);
                Ok(())
            }
            's' => {
                self.session_name = Some(value.to_owned());
                Ok(())
            }
            't' => {
                let mut it = value.split_ascii_whitespace();
                let start = num(it.next(), "start time")?;
                let stop = num(it.next(), "stop time")?;
                self.timing = Some((start, stop));
                Ok(())
            }
            'm' => {
                if self.media.len() >= MAX_MEDIA_SECTIONS {
                    return Err(format!("more than {MAX_MEDIA_SECTIONS} m-sections"));
                }
                self.media.push(media_line(value)?);
                Ok(())
            }
            'c' => {
                let c = connection(value)?;
                match self.media.last_mut() {
                    Some(m) => m.connection = Some(c),
                    None => self.connection = Some(c),
                }
                Ok(())
            }
            'b' => {
                let (k, v) = value.split_once(':').ok_or("expected `b=<type>:<kbps>`")?;
                let b = Bandwidth {
                    kind: k.to_owned(),
                    value: v.trim().parse().map_err(|_| "bandwidth is not a number")?,
                };
                match self.media.last_mut() {
                    Some(m) => m.bandwidths.push(b),
                    None => self.bandwidths.push(b),
                }
                Ok(())
            }
            'a' => {
                let (name, val) = match value.split_once(':') {
                    Some((n, v)) => (n, Some(v)),
                    None => (value, None),
                };
                match self.media.last_mut() {
                    Some(m) => media_attribute(m, name, val),
                    None => self.session_attribute(name, val),
                }
            }
            _ => Ok(()),
        }
    }

    fn session_attribute(&mut self, name: &str, val: Option<&str>) -> R<()> {
        match name {
            "ice-lite" => self.ice_lite = true,
            "group" => {
                let v = val.ok_or("`a=group` needs a value")?;
                let mut it = v.split_ascii_whitespace();
                let semantics = it.next().ok_or("`a=group` needs semantics")?.to_owned();
                self.groups.push(Group {
                    semantics,
                    mids: it.map(str::to_owned).collect(),
                });
            }
            "msid-semantic" => {
                self.msid_semantic = Some(
                    val.ok_or("`a=msid-semantic` needs a value")?
                        .trim()
                        .to_owned(),
                )
            }
            _ => common_attribute(&mut self.attributes, name, val)?,
        }
        Ok(())
    }

    fn finish(mut self) -> Result<SessionDescription, SdpError> {
        for m in &mut self.media {
            m.canonicalize();
        }
        if !self.seen_version {
            return Err(SdpError::Missing('v'));
        }
        Ok(SessionDescription {
            origin: self.origin.ok_or(SdpError::Missing('o'))?,
            session_name: self.session_name.ok_or(SdpError::Missing('s'))?,
            connection: self.connection,
            bandwidths: self.bandwidths,
            timing: self.timing.ok_or(SdpError::Missing('t'))?,
            ice_lite: self.ice_lite,
            groups: self.groups,
            msid_semantic: self.msid_semantic,
            attributes: self.attributes,
            media: self.media,
        })
    }
}

fn num<T: std::str::FromStr>(s: Option<&str>, what: &str) -> R<T> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    s.parse()
        .map_err(|_| format!("{what} `{s}` is not a valid number"))
}

fn word<'a>(s: Option<&'a str>, what: &str) -> R<&'a str> {
    s.ok_or_else(|| format!("missing {what}"))
}

fn origin(v: &str) -> R<Origin> {
    let mut it = v.split_ascii_whitespace();
    let o = Origin {
        username: word(it.next(), "username")?.to_owned(),
        session_id: word(it.next(), "session id")?.to_owned(),
        session_version: num(it.next(), "session version")?,
        net_type: word(it.next(), "network type")?.to_owned(),
        addr_type: word(it.next(), "address type")?.to_owned(),
        address: word(it.next(), "address")?.to_owned(),
    };
    Ok(o)
}

fn connection(v: &str) -> R<Connection> {
    let mut it = v.split_ascii_whitespace();
    Ok(Connection {
        net_type: word(it.next(), "network type")?.to_owned(),
        addr_type: word(it.next(), "address type")?.to_owned(),
        address: word(it.next(), "address")?.to_owned(),
    })
}

fn media_line(v: &str) -> R<MediaDescription> {
    let mut it = v.split_ascii_whitespace();
    let kind = word(it.next(), "media type")?;
    let port_field = word(it.next(), "port")?;
    let (port, num_ports) = match port_field.split_once('/') {
        Some((p, n)) => (num(Some(p), "port")?, Some(num(Some(n), "port count")?)),
        None => (num(Some(port_field), "port")?, None),
    };
    let protocol = word(it.next(), "protocol")?;
    let mut m = MediaDescription::new(kind, port);
    m.num_ports = num_ports;
    m.protocol = protocol.to_owned();
    m.formats = it.map(str::to_owned).collect();
    if m.is_rtp() {
        for f in &m.formats {
            let pt: u8 = f
                .parse()
                .map_err(|_| format!("payload type `{f}` is not a number"))?;
            if pt > 127 {
                return Err(format!("payload type {pt} is above 127"));
            }
        }
    }
    Ok(m)
}

fn pt(s: &str) -> R<u8> {
    let pt: u8 = s
        .trim()
        .parse()
        .map_err(|_| format!("payload type `{s}` is not a number"))?;
    if pt > 127 {
        return Err(format!("payload type {pt} is above 127"));
    }
    Ok(pt)
}

fn common_attribute(a: &mut CommonAttributes, name: &str, val: Option<&str>) -> R<()> {
    let need = |what: &str| val.ok_or_else(|| format!("`a={what}` needs a value"));
    match name {
        "ice-ufrag" => a.ice_ufrag = Some(need(name)?.trim().to_owned()),
        "ice-pwd" => a.ice_pwd = Some(need(name)?.trim().to_owned()),
        "ice-options" => a.ice_options = Some(need(name)?.trim().to_owned()),
        "fingerprint" => a.fingerprints.push(fingerprint(need(name)?)?),
        "setup" => {
            a.setup = Some(match need(name)?.trim() {
                "active" => Setup::Active,
                "passive" => Setup::Passive,
                "actpass" => Setup::ActPass,
                "holdconn" => Setup::HoldConn,
                other => return Err(format!("unknown setup role `{other}`")),
            })
        }
        "extmap-allow-mixed" => a.extmap_allow_mixed = true,
        "extmap" => a.extmaps.push(extmap(need(name)?)?),
        _ => match Direction::from_name(name) {
            Some(d) if val.is_none() => a.direction = Some(d),
            _ => a.other.push(Attribute {
                name: name.to_owned(),
                value: val.map(str::to_owned),
            }),
        },
    }
    Ok(())
}

fn fingerprint(v: &str) -> R<Fingerprint> {
    let (alg, hex) = v
        .trim()
        .split_once(' ')
        .ok_or("expected `a=fingerprint:<hash> <hex>`")?;
    let bytes = hex
        .trim()
        .split(':')
        .map(|b| {
            if b.len() != 2 {
                return Err(format!("fingerprint byte `{b}` is not two hex digits"));
            }
            u8::from_str_radix(b, 16).map_err(|_| format!("fingerprint byte `{b}` is not hex"))
        })
        .collect::<R<Vec<u8>>>()?;
    Ok(Fingerprint {
        algorithm: alg.to_ascii_lowercase(),
        bytes,
    })
}

fn extmap(v: &str) -> R<ExtMap> {
    let mut it = v.splitn(3, ' ');
    let id_dir = word(it.next(), "extension id")?;
    let (id, direction) = match id_dir.split_once('/') {
        Some((id, d)) => (
            id,
            Some(Direction::from_name(d).ok_or_else(|| format!("unknown direction `{d}`"))?),
        ),
        None => (id_dir, None),
    };
    let id: u8 = num(Some(id), "extension id")?;
    if id == 0 {
        return Err("extension id 0 is reserved".into());
    }
    let uri = word(it.next(), "extension URI")?.trim();
    if uri.is_empty() {
        return Err("missing extension URI".into());
    }
    Ok(ExtMap {
        id,
        direction,
        uri: uri.to_owned(),
        attributes: it
            .next()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    })
}

fn media_attribute(m: &mut MediaDescription, name: &str, val: Option<&str>) -> R<()> {
    let need = |what: &str| val.ok_or_else(|| format!("`a={what}` needs a value"));
    match name {
        "mid" => m.mid = Some(need(name)?.trim().to_owned()),
        "rtcp-mux" => m.rtcp_mux = true,
        "rtcp-mux-only" => m.rtcp_mux_only = true,
        "rtcp-rsize" => m.rtcp_rsize = true,
        "bundle-only" => m.bundle_only = true,
        "end-of-candidates" => m.end_of_candidates = true,
        "msid" => m.msid.push(need(name)?.trim().to_owned()),
        "candidate" => m.candidates.push(candidate(need(name)?)?),
        "rtpmap" => m.rtpmaps.push(rtpmap(need(name)?)?),
        "fmtp" => {
            let v = need(name)?;
            let (p, params) = v.split_once(' ').unwrap_or((v, ""));
            m.fmtps.push(Fmtp {
                pt: pt(p)?,
                params: params.trim().to_owned(),
            });
        }
        "rtcp-fb" => m.rtcp_fbs.push(rtcp_fb(need(name)?)?),
        "ssrc" => {
            let v = need(name)?;
            let (s, rest) = v
                .split_once(' ')
                .ok_or("expected `a=ssrc:<ssrc> <attribute>`")?;
            let (attribute, value) = match rest.split_once(':') {
                Some((a, v)) => (a, Some(v.to_owned())),
                None => (rest, None),
            };
            m.ssrcs.push(SsrcAttr {
                ssrc: num(Some(s), "ssrc")?,
                attribute: attribute.trim().to_owned(),
                value,
            });
        }
        "ssrc-group" => {
            let v = need(name)?;
            let mut it = v.split_ascii_whitespace();
            let semantics = word(it.next(), "ssrc-group semantics")?.to_owned();
            let ssrcs = it.map(|s| num(Some(s), "ssrc")).collect::<R<Vec<u32>>>()?;
            m.ssrc_groups.push(SsrcGroup { semantics, ssrcs });
        }
        "rid" => {
            let v = need(name)?;
            let mut it = v.splitn(3, ' ');
            let id = word(it.next(), "rid id")?.to_owned();
            let direction = match word(it.next(), "rid direction")? {
                "send" => RidDirection::Send,
                "recv" => RidDirection::Recv,
                d => return Err(format!("rid direction `{d}` is neither send nor recv")),
            };
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!("rid id `{id}` has characters RFC 8851 forbids"));
            }
            m.rids.push(Rid {
                id,
                direction,
                restrictions: it
                    .next()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
            });
        }
        "simulcast" => m.simulcast = Some(simulcast(need(name)?)?),
        _ => common_attribute(&mut m.attributes, name, val)?,
    }
    Ok(())
}

fn rtpmap(v: &str) -> R<RtpMap> {
    let (p, enc) = v
        .split_once(' ')
        .ok_or("expected `a=rtpmap:<pt> <encoding>/<clock rate>`")?;
    let mut it = enc.trim().split('/');
    let encoding = word(it.next(), "encoding name")?;
    if encoding.is_empty() {
        return Err("missing encoding name".into());
    }
    let clock_rate = num(it.next(), "clock rate")?;
    let channels = it
        .next()
        .map(|c| num(Some(c), "channel count"))
        .transpose()?;
    Ok(RtpMap {
        pt: pt(p)?,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

fn rtcp_fb(v: &str) -> R<RtcpFb> {
    let mut it = v.split_ascii_whitespace();
    let p = word(it.next(), "payload type")?;
    let pt = if p == "*" { None } else { Some(pt(p)?) };
    let kind = word(it.next(), "feedback type")?.to_owned();
    let rest: Vec<&str> = it.collect();
    Ok(RtcpFb {
        pt,
        kind,
        param: (!rest.is_empty()).then(|| rest.join(" ")),
    })
}

fn simulcast(v: &str) -> R<Simulcast> {
    let mut sc = Simulcast::default();
    let mut it = v.split_ascii_whitespace();
    while let Some(dir) = it.next() {
        let list = word(it.next(), "simulcast stream list")?;
        let streams = list
            .split(';')
            .map(|alts| {
                alts.split(',')
                    .map(|r| {
                        let (rid, paused) = match r.strip_prefix('~') {
                            Some(r) => (r, true),
                            None => (r, false),
                        };
                        if rid.is_empty() {
                            return Err("empty rid in simulcast list".to_owned());
                        }
                        Ok(SimulcastStream {
                            rid: rid.to_owned(),
                            paused,
                        })
                    })
                    .collect::<R<Vec<_>>>()
            })
            .collect::<R<Vec<_>>>()?;
        match dir {
            "send" => sc.send = streams,
            "recv" => sc.recv = streams,
            d => {
                return Err(format!(
                    "simulcast direction `{d}` is neither send nor recv"
                ));
            }
        }
    }
    Ok(sc)
}

fn candidate(v: &str) -> R<Candidate> {
    // Some writers repeat the attribute name inside the value (`a=candidate:candidate:...`).
    let v = v.strip_prefix("candidate:").unwrap_or(v);
    let mut it = v.split_ascii_whitespace();
    let foundation = word(it.next(), "foundation")?.to_owned();
    let component = num(it.next(), "component id")?;
    let transport = word(it.next(), "transport")?.to_ascii_lowercase();
    let priority = num(it.next(), "priority")?;
    let address = word(it.next(), "address")?.to_owned();
    let port = num(it.next(), "port")?;
    if word(it.next(), "`typ`")? != "typ" {
        return Err("expected `typ` after the port".into());
    }
    let typ = word(it.next(), "candidate type")?.to_owned();
    let mut c = Candidate {
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        typ,
        raddr: None,
        rport: None,
        extensions: Vec::new(),
    };
    while let Some(k) = it.next() {
        let v = word(it.next(), &format!("value of candidate extension `{k}`"))?;
        match k {
            "raddr" => c.raddr = Some(v.to_owned()),
            "rport" => c.rport = Some(num(Some(v), "rport")?),
            _ => c.extensions.push((k.to_owned(), v.to_owned())),
        }
    }
    Ok(c)
}

/// Parses one `candidate-attribute` value as trickled by a client (RFC 8839 §5.1).
pub fn parse_candidate(v: &str) -> Result<Candidate, String> {
    candidate(v.trim())
}
