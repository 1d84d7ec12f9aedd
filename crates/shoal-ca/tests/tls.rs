//! Real rustls handshakes over in-memory duplex pipes with the configs shoal-ca builds.

use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};
use shoal_ca::{
    client_config, dangerous_unverified_bootstrap_client_config, identify_peer,
    pinned_client_config, server_config, server_name, verify_ca_digest, JoinToken, NodeCredentials,
    Peer, Role, RootCa, CA_SERVER_NAME, DEFAULT_NODE_CERT_VALIDITY, MANAGER_SERVER_NAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const CLUSTER: &str = "clusterabc";

fn creds(root: &RootCa, node: &str, role: Role) -> NodeCredentials {
    NodeCredentials::issue_local(root, node, role, DEFAULT_NODE_CERT_VALIDITY).unwrap()
}

struct Outcome {
    /// What the server saw: the peer, or the handshake error.
    server: Result<Peer, String>,
    /// What the client got back after sending "ping": the reply, or the error.
    client: Result<Vec<u8>, String>,
    alpn: Option<Vec<u8>>,
}

/// Run one connection: the server accepts, identifies the peer and answers "pong" to "ping".
async fn connect(server: ServerConfig, client: ClientConfig, name: &str) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let name = server_name(name).unwrap();

    let server_side = async move {
        let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let peer = identify_peer(conn.peer_certificates()).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    };
    let client_side = async move {
        let mut tls = connector
            .connect(name, c)
            .await
            .map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4];
        let n = tls.read(&mut chunk).await.map_err(|e| e.to_string())?;
        buf.extend_from_slice(&chunk[..n]);
        Ok::<_, String>((buf, alpn))
    };
    let (server, client) = tokio::join!(server_side, client_side);
    let (client, alpn) = match client {
        Ok((buf, alpn)) => (Ok(buf), alpn),
        Err(e) => (Err(e), None),
    };
    Outcome {
        server,
        client,
        alpn,
    }
}

#[tokio::test]
async fn mutual_tls_between_two_issued_certificates_identifies_the_client() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let manager = creds(&root, "manager1", Role::Manager);
    let worker = creds(&root, "worker1", Role::Worker);

    let out = connect(
        server_config(&manager).unwrap(),
        client_config(&worker).unwrap(),
        MANAGER_SERVER_NAME,
    )
    .await;
    assert_eq!(out.client.unwrap(), b"pong");
    assert_eq!(out.alpn.as_deref(), Some(&b"h2"[..]));
    match out.server.unwrap() {
        Peer::Node(id) => {
            assert_eq!(id.node_id, "worker1");
            assert_eq!(id.role, Role::Worker);
            assert_eq!(id.cluster_id, CLUSTER);
        }
        Peer::Anonymous => panic!("client presented a certificate"),
    }

    // Manager to manager, dialled by node id (what raft peers do).
    let manager2 = creds(&root, "manager2", Role::Manager);
    let out = connect(
        server_config(&manager).unwrap(),
        client_config(&manager2).unwrap(),
        "manager1",
    )
    .await;
    assert_eq!(out.client.unwrap(), b"pong");
    assert!(
        matches!(out.server.unwrap(), Peer::Node(id) if id.node_id == "manager2" && id.role == Role::Manager)
    );
}

#[tokio::test]
async fn server_names_are_checked() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let manager = creds(&root, "manager1", Role::Manager);
    let worker = creds(&root, "worker1", Role::Worker);

    // Dialling manager1 by another node's id fails.
    let out = connect(
        server_config(&manager).unwrap(),
        client_config(&worker).unwrap(),
        "manager2",
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(err.contains("not valid for name \"manager2\""), "{err}");

    // A worker certificate cannot pose as a manager.
    let out = connect(
        server_config(&worker).unwrap(),
        client_config(&manager).unwrap(),
        MANAGER_SERVER_NAME,
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(
        err.contains("not valid for name \"swarm-manager\""),
        "{err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn unauthenticated_client_is_accepted_and_seen_as_anonymous() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let manager = creds(&root, "manager1", Role::Manager);
    let out = connect(
        server_config(&manager).unwrap(),
        pinned_client_config(root.cert_pem()).unwrap(),
        CA_SERVER_NAME,
    )
    .await;
    assert_eq!(out.client.unwrap(), b"pong");
    assert_eq!(out.server.unwrap(), Peer::Anonymous);
    assert_eq!(identify_peer(None).unwrap(), Peer::Anonymous);
    assert_eq!(identify_peer(Some(&[])).unwrap(), Peer::Anonymous);
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let manager = creds(&root, "manager1", Role::Manager);
    let intruder_root = RootCa::generate(CLUSTER).unwrap();
    // The intruder trusts our root (it fetched it) but its own certificate is from its own CA.
    let mut intruder = creds(&intruder_root, "worker9", Role::Worker);
    intruder.root_pem = root.cert_pem().to_owned();

    let out = connect(
        server_config(&manager).unwrap(),
        client_config(&intruder).unwrap(),
        MANAGER_SERVER_NAME,
    )
    .await;
    // Same subject as our root (same cluster id), so webpki finds "our" issuer by name and the
    // signature check fails; with another name it would be UnknownIssuer. Either way: refused.
    let err = out.server.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(out.client.is_err(), "the client must not get an answer");
}

#[tokio::test]
async fn server_from_another_ca_is_refused_by_verifying_clients() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let worker = creds(&root, "worker1", Role::Worker);
    let rogue_root = RootCa::generate(CLUSTER).unwrap();
    let rogue = creds(&rogue_root, "manager1", Role::Manager);

    let out = connect(
        server_config(&rogue).unwrap(),
        client_config(&worker).unwrap(),
        MANAGER_SERVER_NAME,
    )
    .await;
    assert!(out.client.unwrap_err().contains("invalid peer certificate"));
    let out = connect(
        server_config(&rogue).unwrap(),
        pinned_client_config(root.cert_pem()).unwrap(),
        CA_SERVER_NAME,
    )
    .await;
    assert!(out.client.unwrap_err().contains("invalid peer certificate"));
}

#[tokio::test]
async fn bootstrap_config_connects_to_anything_and_the_token_digest_decides() {
    let root = RootCa::generate(CLUSTER).unwrap();
    let token = JoinToken::for_root(&root);
    let rogue_root = RootCa::generate(CLUSTER).unwrap();
    let rogue = creds(&rogue_root, "manager1", Role::Manager);
    let genuine = creds(&root, "manager1", Role::Manager);

    // Any server, any name: the handshake succeeds.
    for (server, name) in [
        (&rogue, "anything.example"),
        (&genuine, MANAGER_SERVER_NAME),
    ] {
        let out = connect(
            server_config(server).unwrap(),
            dangerous_unverified_bootstrap_client_config().unwrap(),
            name,
        )
        .await;
        assert_eq!(out.client.unwrap(), b"pong");
        assert_eq!(out.server.unwrap(), Peer::Anonymous);
    }
    // What protects the join is the digest check on the root the server hands over.
    assert!(verify_ca_digest(&token, rogue.root_pem.as_str()).is_err());
    verify_ca_digest(&token, genuine.root_pem.as_str()).unwrap();
}
