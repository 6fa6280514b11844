//! Container lifecycle hooks: postStart right after a container starts, preStop before
//! it is signalled, as the kubelet runs them — `exec` (a command in the container),
//! `httpGet` (a request to the pod on loopback, inside its network namespace) and
//! `sleep`. A failed hook is reported with the kubelet's wording.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::LifecycleHandler;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::runtime::exec::ExecRequest;
use crate::agent::runtime::Runtime;

/// Runs `handler` for the container `id`. `netns` is the pod's network namespace
/// (`None`: host network); `ports` maps the container's named ports.
pub async fn run(
    runtime: &Runtime,
    id: &str,
    handler: &LifecycleHandler,
    netns: Option<PathBuf>,
    ports: &[(String, u16)],
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let args = exec.command.clone().unwrap_or_default();
        return run_exec(runtime, id, args).await;
    }
    if let Some(http) = &handler.http_get {
        let port = match &http.port {
            IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}"))?,
            IntOrString::String(name) => ports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("port {name:?} is not a named port of the container"))?,
        };
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return http_get(netns, port, &path).await;
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    Ok(())
}

async fn run_exec(runtime: &Runtime, id: &str, args: Vec<String>) -> Result<(), String> {
    let cmd = args.join(" ");
    let req = ExecRequest {
        args,
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let mut process = runtime.exec(id, &req).await.map_err(|e| e.to_string())?;
    let handle = process.handle();
    let mut output = Vec::new();
    let drain = async {
        if let Some(mut out) = process.stdout.take() {
            let _ = out.read_to_end(&mut output).await;
        }
        if let Some(mut err) = process.stderr.take() {
            let _ = err.read_to_end(&mut output).await;
        }
    };
    let (code, _) = tokio::join!(handle.wait(), drain);
    handle.delete().await;
    match code.map_err(|e| e.to_string())? {
        0 => Ok(()),
        code => Err(format!(
            "command '{cmd}' exited with {code}: {}",
            String::from_utf8_lossy(&output).trim()
        )),
    }
}

async fn http_get(netns: Option<PathBuf>, port: u16, path: &str) -> Result<(), String> {
    let mut conn = crate::agent::kubelet::portforward::connect(netns, port).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: kube-lifecycle/1.35\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut head))
        .await
        .map_err(|_| "timed out waiting for the response".to_string())?
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "no HTTP response".to_string())?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "HTTP lifecycle hook ({path}) for Container in Pod failed with status {status}"
        ))
    }
}
