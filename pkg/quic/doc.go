// Package quic is the QUIC channel of the visualization server (DESIGN.md
// §2, port 8081): one UDP socket whose connections are routed by ALPN —
// "h3" to HTTP/3 with WebTransport for browsers, ALPNNative to the native
// push protocol for Go clients such as `monitorctl watch` — plus the
// certificates it serves and the native client.
//
// What lives here is transport: the Listener (ALPN routing), Certs (a
// configured certificate, or self-signed ECDSA P-256 ones valid under 14
// days and rotated before expiry, so browsers can pin them with
// serverCertificateHashes), the session framing shared by both paths
// (newline-delimited JSON frames on one bidirectional stream, sample
// messages as numbered datagrams) and Client. The push logic (hub,
// subscriptions, slow-consumer policy, auth) is the server's, in
// visualization/internal/quic on top of visualization/internal/push.
//
// Session, on both paths: the client opens one bidirectional stream and
// writes an Auth frame {"type":"auth","token":JWT,"datagrams":true}; the
// server answers with the hello message, or an error frame and a close
// with CodeUnauthorized. Then the stream carries the client's commands
// and the server's ordered messages (hello, subscribed, error, gap,
// topk, anomaly, alert ...), and datagrams carry sample messages with a
// leading "seq" (SeqDatagram); a hole in the sequence is a lost latest
// value, superseded by the next one.
//
// Pins: quic-go v0.64.1 with webtransport-go v0.13.0, which does not
// build with quic-go v0.65.0 (see DESIGN.md §3).
//
// Concurrency: see each type.
package quic
