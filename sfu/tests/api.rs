//! The real server on ephemeral ports, driven over real gRPC (tonic client) and gRPC-Web (plain
//! HTTP/1.1), covering every RPC and the error statuses a client must be able to act on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use prost::Message;
use ringcast_control::auth::{Authenticator, Grants, unix_now};
use ringcast_proto::v1 as pb;
use ringcast_proto::v1::room_service_client::RoomServiceClient;
use ringcast_proto::v1::signaling_client::SignalingClient;
use ringcast_sfu::config::Config;
use ringcast_sfu::server::Server;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

const CHROMIUM_OFFER: &str =
    include_str!("../../control/tests/fixtures/sdp/chromium156-publish-offer.sdp");
const FIREFOX_OFFER: &str =
    include_str!("../../control/tests/fixtures/sdp/firefox153-publish-offer-datachannel.sdp");
const CHROMIUM_ANSWER: &str =
    include_str!("../../control/tests/fixtures/sdp/chromium156-subscribe-answer.sdp");

fn config() -> Config {
    Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        // Ephemeral shard ports: tests run side by side.
        udp_port_base: 0,
        drain_grace_secs: 0,
        ..Config::default()
    }
}

struct Node {
    server: Server,
    auth: Authenticator,
    channel: Channel,
}

async fn start() -> Node {
    let c = config();
    let server = Server::start(&c).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Node {
        server,
        auth: Authenticator::new(&c.api_key, &c.api_secret),
        channel,
    }
}

impl Node {
    fn rooms(&self) -> RoomServiceClient<Channel> {
        RoomServiceClient::new(self.channel.clone())
    }

    fn signaling(&self) -> SignalingClient<Channel> {
        SignalingClient::new(self.channel.clone())
    }

    fn admin(&self) -> String {
        let g = Grants {
            admin: true,
            ..Grants::default()
        };
        self.auth
            .mint("backend", None, g, unix_now(), 60)
            .unwrap()
            .0
    }

    /// GET on the HTTP port: status, content type and body.
    async fn http_get(&self, path: &str) -> (http::StatusCode, String, String) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let uri: http::Uri = format!("http://{}{path}", self.server.http_addr)
            .parse()
            .unwrap();
        let r = client.get(uri).await.unwrap();
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, content_type, String::from_utf8(body).unwrap())
    }

    fn participant(&self, room: &str, who: &str, publish: bool) -> String {
        let g = Grants {
            room: room.into(),
            admin: false,
            publish,
            subscribe: true,
        };
        self.auth.mint(who, Some(who), g, unix_now(), 60).unwrap().0
    }
}

fn req<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn next_event(s: &mut tonic::Streaming<pb::Event>) -> pb::event::Event {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("event within 5 s")
        .expect("stream open")
        .expect("event ok")
        .event
        .expect("event set")
}

#[tokio::test]
async fn every_rpc_over_grpc() {
    let n = start().await;
    let admin = n.admin();
    let mut rooms = n.rooms();
    let mut sig = n.signaling();

    // RoomService: create (idempotent), get, list.
    let create = pb::CreateRoomRequest {
        name: "standup".into(),
        max_participants: 10,
        empty_timeout_secs: 0,
        metadata: "{\"team\":\"core\"}".into(),
    };
    let room = rooms
        .create_room(req(create.clone(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(room.sid.starts_with("RM_"));
    assert_eq!(room.metadata, "{\"team\":\"core\"}");
    let again = rooms
        .create_room(req(create, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.sid, room.sid);
    let got = rooms
        .get_room(req(
            pb::GetRoomRequest {
                name: "standup".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.sid, room.sid);
    let list = rooms
        .list_rooms(req(pb::ListRoomsRequest { names: vec![] }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.rooms.len(), 1);

    // CreateAccessToken mints a participant token that Signaling accepts.
    let tok = rooms
        .create_access_token(req(
            pb::CreateAccessTokenRequest {
                room: "standup".into(),
                identity: "alice".into(),
                name: "Alice".into(),
                can_publish: true,
                can_subscribe: true,
                admin: false,
                ttl_secs: 600,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(tok.expires_at_unix_ms > (unix_now() as i64 + 590) * 1000);
    let alice = tok.token;
    let bob = n.participant("standup", "bob", true);

    // Join: Alice first, Bob second; Bob opens his event stream.
    let j = sig
        .join(req(
            pb::JoinRequest {
                name: String::new(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(j.participant.as_ref().unwrap().name, "Alice");
    assert_eq!(j.candidates.len(), 1);
    assert!(j.candidates[0].candidate.contains("127.0.0.1"));
    let j = sig
        .join(req(
            pb::JoinRequest {
                name: "Bobby".into(),
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(j.others.len(), 1);
    let mut alice_events = sig
        .events(req(pb::EventsRequest {}, &alice))
        .await
        .unwrap()
        .into_inner();
    let mut bob_events = sig
        .events(req(pb::EventsRequest {}, &bob))
        .await
        .unwrap()
        .into_inner();
    match next_event(&mut alice_events).await {
        pb::event::Event::ParticipantJoined(p) => {
            assert_eq!(p.participant.unwrap().identity, "bob")
        }
        e => panic!("unexpected {e:?}"),
    }

    // Publish from Alice (Chromium's simulcast offer).
    let p = sig
        .publish(req(
            pb::PublishRequest {
                sdp_offer: CHROMIUM_OFFER.into(),
                track_names: [("1".to_owned(), "camera".to_owned())].into(),
                track_sources: [("1".to_owned(), pb::TrackSource::Camera as i32)].into(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(p.sdp_answer.contains("a=ice-lite"));
    assert!(p.sdp_answer.contains("a=setup:passive"));
    assert!(p.sdp_answer.contains("a=simulcast:recv q;h;f"));
    assert_eq!(p.tracks.len(), 2);
    let video = p
        .tracks
        .iter()
        .find(|t| t.kind == pb::TrackKind::Video as i32)
        .unwrap()
        .clone();
    assert_eq!(video.name, "camera");
    assert_eq!(video.rids, ["q", "h", "f"]);
    assert_eq!(video.source, pb::TrackSource::Camera as i32);

    // Bob hears of both tracks and is asked to renegotiate.
    let mut published = 0;
    let mut offer_ready = false;
    while published < 2 || !offer_ready {
        match next_event(&mut bob_events).await {
            pb::event::Event::TrackPublished(_) => published += 1,
            pb::event::Event::SubscriberOfferReady(_) => offer_ready = true,
            e => panic!("unexpected {e:?}"),
        }
    }
    let offer = sig
        .subscribe(req(pb::SubscribeRequest {}, &bob))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(offer.sdp_offer.matches("a=sendonly").count(), 2);
    assert_eq!(offer.mid_to_track_sid.len(), 2);
    let stale = sig
        .subscribe_answer(req(
            pb::SubscribeAnswerRequest {
                sdp_answer: CHROMIUM_ANSWER.into(),
                offer_version: offer.offer_version + 7,
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let ans = sig
        .subscribe_answer(req(
            pb::SubscribeAnswerRequest {
                sdp_answer: CHROMIUM_ANSWER.into(),
                offer_version: offer.offer_version,
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ans.rejected.is_empty());

    // ListParticipants shows tracks and subscriptions.
    let ps = rooms
        .list_participants(req(
            pb::ListParticipantsRequest {
                room: "standup".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .participants;
    assert_eq!(ps.len(), 2);
    let bob_p = ps.iter().find(|p| p.identity == "bob").unwrap();
    assert_eq!(bob_p.subscribed_track_sids.len(), 2);
    assert_eq!(bob_p.name, "Bobby");

    // Bob says what he renders Alice's video at; bad settings and foreign tracks are refused.
    let settings = |max_quality: pb::VideoQuality, priority| pb::SubscriptionSettings {
        max_quality: max_quality as i32,
        width: 640,
        height: 360,
        priority,
        max_fps: 0,
    };
    let update =
        |track: &str, s: Option<pb::SubscriptionSettings>| pb::UpdateSubscriptionSettingsRequest {
            track_sids: vec![track.to_owned()],
            settings: s,
        };
    sig.update_subscription_settings(req(
        update(&video.sid, Some(settings(pb::VideoQuality::Medium, 2))),
        &bob,
    ))
    .await
    .unwrap();
    let refusals = [
        (update(&video.sid, None), Code::InvalidArgument),
        (
            update(&video.sid, Some(settings(pb::VideoQuality::Low, 256))),
            Code::InvalidArgument,
        ),
        (
            update(
                &video.sid,
                Some(pb::SubscriptionSettings {
                    max_quality: 9,
                    ..settings(pb::VideoQuality::Low, 0)
                }),
            ),
            Code::InvalidArgument,
        ),
        (
            update("TR_notsubscribed", Some(settings(pb::VideoQuality::Low, 0))),
            Code::FailedPrecondition,
        ),
    ];
    for (r, code) in refusals {
        let e = sig
            .update_subscription_settings(req(r, &bob))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }

    // Mute, unsubscribe, resubscribe.
    let muted = rooms
        .mute_published_track(req(
            pb::MutePublishedTrackRequest {
                room: "standup".into(),
                identity: "alice".into(),
                track_sid: video.sid.clone(),
                muted: true,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(muted.muted);
    loop {
        match next_event(&mut bob_events).await {
            pb::event::Event::TrackMuted(m) => break assert!(m.muted && m.track_sid == video.sid),
            // One per track added above.
            pb::event::Event::SubscriberOfferReady(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    let subs = rooms
        .update_subscriptions(req(
            pb::UpdateSubscriptionsRequest {
                room: "standup".into(),
                identity: "bob".into(),
                track_sids: vec![video.sid.clone()],
                subscribe: false,
                settings: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(subs.subscribed_track_sids.len(), 1);

    // ICE restarts.
    let r = sig
        .ice_restart(req(
            pb::IceRestartRequest {
                role: pb::TransportRole::Subscriber as i32,
                sdp_offer: String::new(),
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.sdp.contains("a=ice-lite") && r.offer_version > offer.offer_version);
    let r = sig
        .ice_restart(req(
            pb::IceRestartRequest {
                role: pb::TransportRole::Publisher as i32,
                sdp_offer: CHROMIUM_OFFER.into(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.sdp.contains("a=setup:passive"));

    // RemoveParticipant: Bob learns Alice was removed.
    rooms
        .remove_participant(req(
            pb::RemoveParticipantRequest {
                room: "standup".into(),
                identity: "alice".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    loop {
        match next_event(&mut bob_events).await {
            pb::event::Event::ParticipantLeft(l) => {
                assert_eq!(l.identity, "alice");
                assert_eq!(l.reason, pb::LeaveReason::Removed as i32);
                break;
            }
            pb::event::Event::SubscriberOfferReady(_) | pb::event::Event::TrackUnpublished(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    // Alice's own stream says why, then ends.
    let mut saw_left = false;
    while let Ok(Some(Ok(ev))) =
        tokio::time::timeout(Duration::from_secs(5), alice_events.next()).await
    {
        if let Some(pb::event::Event::ParticipantLeft(l)) = ev.event {
            saw_left |= l.identity == "alice" && l.reason == pb::LeaveReason::Removed as i32;
        }
    }
    assert!(saw_left);

    // Leave, then delete the room.
    sig.leave(req(pb::LeaveRequest {}, &bob)).await.unwrap();
    let e = sig.leave(req(pb::LeaveRequest {}, &bob)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    rooms
        .delete_room(req(
            pb::DeleteRoomRequest {
                name: "standup".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let e = rooms
        .get_room(req(
            pb::GetRoomRequest {
                name: "standup".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    n.server.stop().await;
}

#[tokio::test]
async fn errors_are_statuses_a_person_can_act_on() {
    let n = start().await;
    let admin = n.admin();
    let mut rooms = n.rooms();
    let mut sig = n.signaling();
    rooms
        .create_room(req(
            pb::CreateRoomRequest {
                name: "r".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();

    // Authentication.
    let e = rooms
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("authorization"), "{}", e.message());
    let forged = Authenticator::new("devkey", "some-other-secret-entirely")
        .mint(
            "x",
            None,
            Grants {
                admin: true,
                ..Grants::default()
            },
            unix_now(),
            60,
        )
        .unwrap()
        .0;
    let e = rooms
        .list_rooms(req(pb::ListRoomsRequest::default(), &forged))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let expired = n
        .auth
        .mint(
            "x",
            None,
            Grants {
                admin: true,
                ..Grants::default()
            },
            unix_now() - 7200,
            60,
        )
        .unwrap()
        .0;
    let e = rooms
        .list_rooms(req(pb::ListRoomsRequest::default(), &expired))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"));

    // Authorization.
    let alice = n.participant("r", "alice", true);
    let e = rooms
        .list_rooms(req(pb::ListRoomsRequest::default(), &alice))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let viewer = n.participant("r", "viewer", false);
    sig.join(req(pb::JoinRequest::default(), &viewer))
        .await
        .unwrap();
    let e = sig
        .publish(req(
            pb::PublishRequest {
                sdp_offer: CHROMIUM_OFFER.into(),
                ..Default::default()
            },
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = sig
        .join(req(pb::JoinRequest::default(), &admin))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "admin token names no room"
    );

    // Not found.
    let ghost = n.participant("no-such-room", "alice", true);
    let e = sig
        .join(req(pb::JoinRequest::default(), &ghost))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("no-such-room"));
    let e = sig
        .subscribe(req(pb::SubscribeRequest {}, &alice))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "not joined yet");

    // Invalid arguments change nothing.
    sig.join(req(pb::JoinRequest::default(), &alice))
        .await
        .unwrap();
    let before = rooms
        .list_participants(req(
            pb::ListParticipantsRequest { room: "r".into() },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let e = sig
        .publish(req(
            pb::PublishRequest {
                sdp_offer: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video nine UDP/TLS/RTP/SAVPF 96\r\n".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("line 5"), "{}", e.message());
    let e = sig
        .publish(req(
            pb::PublishRequest {
                sdp_offer: CHROMIUM_OFFER.replace("a=group:BUNDLE 0 1\r\n", ""),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("BUNDLE"));
    let after = rooms
        .list_participants(req(
            pb::ListParticipantsRequest { room: "r".into() },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before, after);
    let e = rooms
        .create_room(req(
            pb::CreateRoomRequest {
                name: "has spaces".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rooms
        .create_room(req(
            pb::CreateRoomRequest {
                name: "r".into(),
                max_participants: 3,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = sig
        .ice_restart(req(pb::IceRestartRequest::default(), &alice))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A data channel m-line is rejected in the answer, not an error.
    let p = sig
        .publish(req(
            pb::PublishRequest {
                sdp_offer: FIREFOX_OFFER.into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.rejected.len(), 1);
    assert!(p.rejected[0].reason.contains("data channels"));
    assert!(p.sdp_answer.contains("m=application 0 UDP/DTLS/SCTP"));
    n.server.stop().await;
}

/// gRPC-Web frame: flag byte, big-endian length, message.
fn grpc_web_frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(&body);
    b.freeze()
}

#[tokio::test]
async fn grpc_web_over_http1() {
    let n = start().await;
    let admin = n.admin();
    n.rooms()
        .create_room(req(
            pb::CreateRoomRequest {
                name: "web".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url = format!(
        "http://{}/ringcast.v1.RoomService/ListRooms",
        n.server.grpc_addr
    );

    // CORS preflight, as a browser page on another origin sends it.
    let pre = http::Request::builder()
        .method("OPTIONS")
        .uri(&url)
        .header("origin", "http://127.0.0.1:8080")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.request(pre).await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );

    let post = http::Request::builder()
        .method("POST")
        .uri(&url)
        .version(http::Version::HTTP_11)
        .header("origin", "http://127.0.0.1:8080")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {admin}"))
        .body(Full::new(grpc_web_frame(&pb::ListRoomsRequest::default())))
        .unwrap();
    let res = client.request(post).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("grpc-status")
    );
    let mut body = res.into_body().collect().await.unwrap().to_bytes();
    // Data frame, then the trailer frame (flag 0x80).
    assert_eq!(body.get_u8(), 0);
    let len = body.get_u32() as usize;
    let rooms = pb::ListRoomsResponse::decode(body.split_to(len)).unwrap();
    assert_eq!(rooms.rooms.len(), 1);
    assert_eq!(rooms.rooms[0].name, "web");
    assert_eq!(body.get_u8(), 0x80);
    let len = body.get_u32() as usize;
    let trailers = String::from_utf8(body.split_to(len).to_vec()).unwrap();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // A gRPC-Web call without a token gets its status in the trailers/headers, not a crash.
    let post = http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("content-type", "application/grpc-web+proto")
        .body(Full::new(grpc_web_frame(&pb::ListRoomsRequest::default())))
        .unwrap();
    let res = client.request(post).await.unwrap();
    let status = res
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status.as_deref(), Some("16"), "UNAUTHENTICATED");
    n.server.stop().await;
}

#[tokio::test]
async fn health_endpoints_and_drain() {
    let n = start().await;
    assert_eq!(n.http_get("/healthz").await.0, 200);
    assert_eq!(n.http_get("/readyz").await.0, 200);
    let (status, _, body) = n.http_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "ringcast_build_info",
        "ringcast_datapath_backend",
        "ringcast_jemalloc_bytes",
        "ringcast_rooms",
        "ringcast_participants",
        "ringcast_transports{state=\"connected\"}",
        "ringcast_events_coalesced_total",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(n.channel.clone());
    let s = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "ringcast.v1.Signaling".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Draining: readiness false and Join refused with UNAVAILABLE, while the node still answers.
    let admin = n.admin();
    n.rooms()
        .create_room(req(
            pb::CreateRoomRequest {
                name: "d".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    n.server.control.registry().set_draining();
    assert_eq!(n.http_get("/readyz").await.0, 503);
    let e = n
        .signaling()
        .join(req(
            pb::JoinRequest::default(),
            &n.participant("d", "late", true),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    n.server.stop().await;
}

#[tokio::test]
async fn the_demo_page_is_served_with_its_client_and_config() {
    let n = start().await;
    let get = |path: &'static str| n.http_get(path);
    let (status, ct, page) = get("/").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(page.contains("demo.js"), "the page loads its script");
    for (path, needle) in [
        ("/demo.js", "ringcast-client.js"),
        ("/ringcast-client.js", "export class RingcastClient"),
        ("/protobuf.min.js", "protobuf"),
        ("/ringcast.proto", "service Signaling"),
    ] {
        let (status, _, body) = get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    let (_, ct, config) = get("/demo-config.json").await;
    assert_eq!(ct, "application/json");
    assert_eq!(
        config,
        format!("{{\"grpcPort\":{}}}", n.server.grpc_addr.port())
    );
    assert_eq!(get("/nope").await.0, 404);
    n.server.stop().await;
}
