//! A real S3-compatible server for the object storage tests: moto's server mode
//! (`tests/common/s3_server.py`), on 127.0.0.1 and a free port, one per test binary. It
//! stops by itself when the test binary exits, whether its tests passed or failed (it
//! watches its parent process), so nothing is left running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cairn::{BucketStore, ObjectStoreOptions, SnapshotStore};

/// The running server.
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    port: u16,
    _child: Mutex<Child>,
}

/// The server of this test binary, started on first use.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> S3Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/s3_server.py");
    let log = std::env::temp_dir().join(format!("cairn-s3-server-{}.log", std::process::id()));
    let stderr = std::fs::File::create(&log).expect("create the S3 server's log");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start python3 for the S3 test server (./run setup installs what it needs)");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("the server's stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the S3 test server's port");
    let Ok(port) = line.trim().parse::<u16>() else {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!(
            "the S3 test server (moto) did not start; is moto installed? `./run setup` \
             installs it (pip install 'moto[server]'). Its output:\n{log}"
        );
    };
    S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
        _child: Mutex::new(child),
    }
}

impl S3Server {
    /// Creates a new, empty bucket named after `name` and this process; returns its name.
    pub fn bucket(&self, name: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bucket = format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("reach the S3 server");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send CreateBucket");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read CreateBucket's answer");
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "CreateBucket {bucket}: {response}"
        );
        bucket
    }

    /// The object store settings that reach this server (as the environment would give
    /// them: endpoint, plain HTTP, any credentials).
    pub fn options(&self) -> ObjectStoreOptions {
        let mut options = ObjectStoreOptions::default();
        for (key, value) in self.env() {
            options.config.insert(key.to_ascii_lowercase(), value);
        }
        options
    }

    /// The same settings as environment variables, for the processes a test starts.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "cairn-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "cairn-test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// A store on `s3://<bucket>/<prefix>`.
    pub fn store(&self, bucket: &str, prefix: &str) -> Arc<dyn SnapshotStore> {
        Arc::new(BucketStore::open(&url(bucket, prefix), &self.options()).expect("open the bucket"))
    }
}

/// `s3://<bucket>/<prefix>` (or `s3://<bucket>` for an empty prefix).
pub fn url(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}
