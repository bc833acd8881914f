//! The README's quick start, then mail through the store-client API, seen by the admin tools.

use std::io::Write;
use std::process::{Command, Stdio};

use e2e_tests::binary;
use store_client::{Flag, Secret, StoreClient};

#[tokio::test]
async fn quick_start_then_mail_is_visible_to_the_admin_tools() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("msg");
    let out = Command::new(binary("start-msg"))
        .arg("--root")
        .arg(&root)
        // Prepare only: this test uses the store through its API, without the services.
        .arg("--prepare-only")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("First user created: admin, password: "))
        .expect("start-msg prints the first user's password")
        .to_owned();

    // An administrator adds a user the way the README says.
    let mut child = Command::new(binary("msuser"))
        .arg("--root")
        .arg(&root)
        .args(["add", "joe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"joe-pass\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

    // Both users log in through the API every front end uses.
    let client = StoreClient::open(&root).await.unwrap();
    client
        .authenticate("admin", &Secret::new(password))
        .await
        .unwrap();
    let joe = client
        .authenticate("joe", &Secret::new("joe-pass".to_string()))
        .await
        .unwrap();
    for i in 0..3 {
        joe.append(
            "INBOX",
            format!("Subject: {i}\r\n\r\nhello\r\n").into_bytes(),
            &[Flag::Seen],
            None,
        )
        .await
        .unwrap();
    }

    let out = Command::new(binary("mboxutil"))
        .arg("--root")
        .arg(&root)
        .args(["-l", "-p", "user/joe/INBOX"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<&str> = line.trim().split('\t').collect();
    assert_eq!(fields[..3], ["user/joe/INBOX", "primary", "3"], "{line}");

    // The folder's files are where hashdir says.
    let out = Command::new(binary("hashdir"))
        .arg("--root")
        .arg(&root)
        .arg("user/joe/INBOX")
        .output()
        .unwrap();
    let folder = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(std::path::Path::new(&folder).join("store.idx").exists());

    // A quota set by the administrator is enforced on the next append.
    let out = Command::new(binary("mboxutil"))
        .arg("--root")
        .arg(&root)
        .args(["-q", "user/joe", "-m", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = joe
        .append("INBOX", b"Subject: over\r\n\r\nx\r\n".to_vec(), &[], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, store_client::ClientError::OverQuota(_)),
        "{err}"
    );
}
