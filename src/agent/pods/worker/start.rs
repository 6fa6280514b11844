//! Starting a container attempt: the pod's sandbox (network namespace) and volumes,
//! the image per pull policy, the OCI spec, create and start on containerd with the
//! layout labels, and the postStart hook.

use super::*;
use crate::agent::runtime::Error as RuntimeError;

impl Worker {
    /// Creates and starts the next attempt of slot `i`.
    pub(super) async fn start(&mut self, i: usize) -> Result<(), Option<Instant>> {
        let ctx = self.ctx.clone();
        let spec = self.slots[i].spec.clone();
        let first_run = self.slots[i].id.is_none();
        let image = match image::ensure(&ctx, &self.pod, &spec).await {
            Ok((config, pulled)) => {
                let slot = &mut self.slots[i];
                slot.pull_backoff.reset();
                slot.status.image_id = config.id.clone();
                if !pulled && first_run {
                    ctx.event(
                        &self.pod,
                        "Normal",
                        "Pulled",
                        &format!(
                            "Container image \"{}\" already present on machine",
                            spec.image.as_deref().unwrap_or_default()
                        ),
                    );
                }
                config
            }
            Err(f) => {
                let slot = &mut self.slots[i];
                // Unlike a crash, a failed pull always waits before the next try.
                let now = Instant::now();
                slot.pull_backoff.failed(now, None);
                if !slot.pull_backoff.waiting(now) {
                    slot.pull_backoff.failed(now, None);
                }
                ctx.event(
                    &self.pod,
                    "Warning",
                    "Failed",
                    &format!(
                        "Failed to pull image \"{}\": {}",
                        spec.image.as_deref().unwrap_or_default(),
                        f.message
                    ),
                );
                slot.status.state = State::Waiting {
                    reason: f.reason.into(),
                    message: Some(f.message),
                };
                return Err(slot.pull_backoff.until());
            }
        };
        let network = match &self.netns {
            Some(p) => Namespace::Path(p.clone()),
            None => Namespace::Host,
        };
        let facts = ctx.node_facts(&self.pod, self.pod_ip.as_deref());
        let Some(volumes) = self.volumes.as_ref() else {
            return Err(Some(Instant::now() + RETRY));
        };
        let sctx = SpecContext {
            network,
            volumes,
            objects: &self.objects,
            node: &facts,
            cgroup_parent: format!("/k3rs/{}", self.uid),
        };
        let built = spec::container_spec(&self.pod, &spec, &image, &sctx);
        let slot = &mut self.slots[i];
        let mut cspec = match built {
            Ok(s) => s,
            Err(e) => {
                slot.status.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(e.to_string()),
                };
                ctx.event(&self.pod, "Warning", "Failed", &format!("Error: {e}"));
                return Err(Some(Instant::now() + RETRY));
            }
        };
        let attempt = if first_run {
            slot.status.restart_count
        } else {
            slot.status.restart_count + 1
        };
        let id = layout::container_id(&self.uid, &spec.name, attempt);
        let log_dir = layout::pod_log_dir(&ctx.log_dir, &self.ns, &self.name, &self.uid);
        let log_path = layout::container_log_path(&log_dir, &spec.name, attempt);
        if let Some(parent) = log_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        cspec
            .annotations
            .insert("io.kubernetes.pod.name".into(), self.name.clone());
        // The runc shim groups containers by this annotation: one shim process per pod
        // (as under the CRI plugin) instead of one per container.
        cspec
            .annotations
            .insert("io.kubernetes.cri.sandbox-id".into(), self.uid.clone());
        let mut labels = HashMap::new();
        for (k, v) in [
            (layout::LABEL_POD_NAMESPACE, self.ns.clone()),
            (layout::LABEL_POD_NAME, self.name.clone()),
            (layout::LABEL_POD_UID, self.uid.clone()),
            (layout::LABEL_CONTAINER_NAME, spec.name.clone()),
            (layout::LABEL_RESTART_COUNT, attempt.to_string()),
            (
                layout::LABEL_CONTAINER_KIND,
                if slot.init { "init" } else { "app" }.to_string(),
            ),
            (
                layout::LABEL_LOG_PATH,
                log_path.to_string_lossy().into_owned(),
            ),
            (
                layout::LABEL_NETNS,
                self.netns
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        ] {
            labels.insert(k.to_string(), v);
        }
        let tty = spec.tty.unwrap_or(false);
        if tty {
            labels.insert(layout::LABEL_TTY.to_string(), "true".into());
        }
        // `stdin: true` with a terminal: a FIFO the shim copies into the terminal and
        // `kubectl attach` writes to. We hold a writer so the container never reads EOF.
        // (Without a terminal the runc shim connects no stdin when output goes to the
        // log binary, so only tty containers get one.)
        let mut stdin_fifo = None;
        if tty && spec.stdin.unwrap_or(false) {
            let dir = layout::pod_dir(&ctx.agent_dir, &self.uid).join("stdin");
            let path = dir.join(format!("{}-{attempt}", spec.name));
            match make_fifo(&dir, &path) {
                Ok(holder) => {
                    labels.insert(
                        layout::LABEL_STDIN_FIFO.to_string(),
                        path.to_string_lossy().into_owned(),
                    );
                    slot.stdin = Some(holder);
                    stdin_fifo = Some(path);
                }
                Err(e) => {
                    tracing::warn!(container = %spec.name, error = %e, "cannot create the stdin FIFO")
                }
            }
        }
        let start = crate::agent::runtime::StartOptions {
            stdin_fifo,
            terminal: tty,
        };
        let new = NewContainer {
            id: id.clone(),
            image: image.name.clone(),
            spec: cspec,
            labels,
        };
        let result = async {
            match ctx.runtime.create_from(&new, &image).await {
                // A leftover of this attempt (the agent stopped between create and
                // start): replace it.
                Err(RuntimeError::Containerd(e)) if e.is_already_exists() => {
                    ctx.runtime.remove(&id).await?;
                    ctx.runtime.create_from(&new, &image).await?;
                }
                other => other?,
            }
            ctx.runtime
                .start_with(&id, &LoggerConfig::new(&log_path), &start)
                .await
        }
        .await;
        let slot = &mut self.slots[i];
        if let Err(e) = result {
            let _ = ctx.runtime.remove(&id).await;
            tracing::warn!(pod = %self.name, container = %spec.name, error = %e, "cannot start container");
            ctx.event(&self.pod, "Warning", "Failed", &format!("Error: {e}"));
            slot.status.state = State::Waiting {
                reason: "RunContainerError".into(),
                message: Some(e.to_string()),
            };
            slot.backoff.failed(Instant::now(), None);
            return Err(slot.backoff.until().or(Some(Instant::now() + RETRY)));
        }
        // Like the kubelet, keep the last dead run (for `logs --previous`) and remove
        // the one before it, with its log.
        slot.id = Some(id.clone());
        if attempt >= 2 {
            let older = layout::container_id(&self.uid, &spec.name, attempt - 2);
            let rt = ctx.runtime.clone();
            tokio::spawn(async move {
                let _ = rt.remove(&older).await;
            });
        }
        if let State::Terminated(t) = &slot.status.state {
            slot.status.last = Some(t.clone());
        }
        if attempt >= 2 {
            let _ = std::fs::remove_file(layout::container_log_path(
                &log_dir,
                &spec.name,
                attempt - 2,
            ));
        }
        slot.status.restart_count = attempt;
        slot.status.container_id = Some(format!("containerd://{id}"));
        slot.status.state = State::Running { started_at: now() };
        slot.started = Some(Instant::now());
        slot.live = true;
        tracing::info!(pod = %format!("{}/{}", self.ns, self.name), container = %spec.name, attempt, "container started");
        ctx.event(
            &self.pod,
            "Normal",
            "Created",
            &format!("Created container: {}", spec.name),
        );
        ctx.event(
            &self.pod,
            "Normal",
            "Started",
            &format!("Started container {}", spec.name),
        );
        self.spawn_waiter(id.clone());
        if let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let ports = named_ports(&spec);
            if let Err(e) = hooks::run(&ctx.runtime, &id, hook, self.netns.clone(), &ports).await {
                // Like the kubelet: the container is killed and restarted per policy.
                tracing::warn!(pod = %self.name, container = %spec.name, error = %e, "postStart hook failed");
                ctx.event(
                    &self.pod,
                    "Warning",
                    "FailedPostStartHook",
                    &format!("PostStartHook failed: {e}"),
                );
                let _ = ctx.runtime.kill(&id, libc::SIGKILL as u32, true).await;
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_sandbox(&mut self) -> Result<(), String> {
        if host_network(&self.pod) || self.netns.is_some() {
            return Ok(());
        }
        let dir = self.ctx.netns_dir.clone();
        let uid = self.uid.clone();
        let path = tokio::task::spawn_blocking(move || crate::agent::netns::create(&dir, &uid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(net) = &self.ctx.network {
            // Idempotent: an adopted pod gets back the address it had.
            let pod_net = net.attach(&self.uid, &path).await.map_err(|e| {
                format!("Failed to create pod sandbox: failed to set up the pod network: {e}")
            })?;
            self.pod_ip = Some(pod_net.ip.to_string());
        }
        self.netns = Some(path);
        Ok(())
    }

    pub(super) async fn ensure_volumes(&mut self) -> Result<(), String> {
        let refs = volumes::references(&self.pod);
        let mut objects = Objects::default();
        for name in &refs.config_maps {
            let path = format!("/api/v1/namespaces/{}/configmaps/{name}", self.ns);
            match self.ctx.client.get(&path).await {
                Ok(Some(cm)) => {
                    objects.config_maps.insert(name.clone(), cm);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        for name in &refs.secrets {
            let path = format!("/api/v1/namespaces/{}/secrets/{name}", self.ns);
            match self.ctx.client.get(&path).await {
                Ok(Some(s)) => {
                    objects.secrets.insert(name.clone(), s);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        objects.service_account_tokens = volumes::satoken::ensure(
            &self.ctx.client,
            &self.pod,
            std::mem::take(&mut self.objects.service_account_tokens),
            jiff::Timestamp::now().as_second(),
        )
        .await
        .map_err(|e| format!("failed to fetch token: {e}"))?;
        objects.claims =
            volumes::pvc::fetch(&self.ctx.client, &self.pod, &self.ctx.agent_dir).await?;
        let pod_dir = layout::pod_dir(&self.ctx.agent_dir, &self.uid);
        let facts = self.ctx.node_facts(&self.pod, self.pod_ip.as_deref());
        let pod = self.pod.clone();
        let objects_for_prepare = std::mem::take(&mut objects);
        let (result, objects) = tokio::task::spawn_blocking(move || {
            let r = volumes::prepare(&pod_dir, &pod, &objects_for_prepare, &facts);
            (r, objects_for_prepare)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.objects = objects;
        match result {
            Ok(v) => {
                self.volumes = Some(v);
                Ok(())
            }
            Err(e) => {
                for slot in &mut self.slots {
                    if slot.id.is_none() {
                        slot.status.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: None,
                        };
                    }
                }
                Err(e.to_string())
            }
        }
    }
}

/// Creates the FIFO at `path` and opens it read-write: the returned file keeps a writer
/// (and a reader, so the open does not block) for as long as the container runs.
fn make_fifo(dir: &std::path::Path, path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}
