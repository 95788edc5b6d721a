//! Model stage: the manifest and the tract runtime.
//!
//! A model directory holds the ONNX file and `manifest.toml`. Loading checks the file's sha256
//! and the input/output shapes against the manifest, optimises once and keeps one runnable
//! plan and one state for every frame. Any mismatch is an error naming the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, OpState};

use crate::model_prep::eval_node;
use crate::preprocess::Normalization;

pub const MANIFEST_FILE: &str = "manifest.toml";
/// ed25519 signature over the manifest's bytes, 128 hex digits (`kidney-screen sign`).
pub const SIGNATURE_FILE: &str = "manifest.toml.sig";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
}

/// What the model's single output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Softmax already applied.
    Probabilities,
    /// Raw scores; softmax is applied here.
    Logits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub labels: Vec<String>,
    pub positive_label: String,
}

/// Operating point shipped with the model (a site may override it in its profile).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoint {
    pub threshold: f32,
    /// Probabilities in [low, high) are INDETERMINATE.
    pub indeterminate: [f32; 2],
}

/// `manifest.toml` of a model directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: String,
    pub version: String,
    pub architecture: String,
    pub file: String,
    pub sha256: String,
    pub input: InputSpec,
    pub normalization: Normalization,
    pub output: OutputSpec,
    pub decision: OperatingPoint,
    /// Free-form provenance: quantization, training data, metrics. Shown, never interpreted.
    #[serde(default)]
    pub quantization: toml::Table,
    #[serde(default)]
    pub training: toml::Table,
    #[serde(default)]
    pub metrics: toml::Table,
    #[serde(default)]
    pub intended_use: String,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read model manifest {}", path.display()))?;
        Self::parse(&bytes, &path)
    }

    /// The manifest from its bytes (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .with_context(|| format!("malformed model manifest {}: not UTF-8", path.display()))?;
        let manifest: Manifest =
            toml::from_str(text).with_context(|| format!("malformed model manifest {}", path.display()))?;
        manifest.validate().with_context(|| format!("invalid model manifest {}", path.display()))?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        ensure!(!self.id.trim().is_empty(), "id is empty");
        ensure!(
            self.sha256.len() == 64 && self.sha256.chars().all(|c| c.is_ascii_hexdigit()),
            "sha256 must be 64 hex digits"
        );
        ensure!(self.input.channels == 3, "input.channels must be 3 (got {})", self.input.channels);
        ensure!(
            (16..=1024).contains(&self.input.width) && (16..=1024).contains(&self.input.height),
            "input size {}x{} must be within 16..1024",
            self.input.width,
            self.input.height
        );
        self.normalization.validate()?;
        ensure!(self.output.labels.len() == 2, "output.labels must name 2 classes");
        ensure!(
            self.output.labels.contains(&self.output.positive_label),
            "output.positive_label {:?} is not one of the labels {:?}",
            self.output.positive_label,
            self.output.labels
        );
        validate_operating_point(&self.decision)?;
        Ok(())
    }

    /// Index of the positive (ESRD) class in the output.
    pub fn positive_index(&self) -> usize {
        self.output.labels.iter().position(|l| *l == self.output.positive_label).unwrap_or(1)
    }
}

/// Threshold in (0, 1), band low <= threshold <= high, all within 0..1.
pub fn validate_operating_point(op: &OperatingPoint) -> Result<()> {
    let [lo, hi] = op.indeterminate;
    ensure!(op.threshold > 0.0 && op.threshold < 1.0, "decision threshold {} must be within (0, 1)", op.threshold);
    ensure!(
        (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && lo <= op.threshold && op.threshold <= hi,
        "indeterminate band [{lo}, {hi}] must lie within 0..1 and contain the threshold {}",
        op.threshold
    );
    Ok(())
}

/// Checks `dir/manifest.toml.sig` against the manifest bytes with an ed25519 public key.
pub fn verify_manifest_signature(dir: &Path, manifest: &[u8], public_key: &[u8; 32]) -> Result<()> {
    use ed25519_dalek::{Signature, VerifyingKey};
    let sig_path = dir.join(SIGNATURE_FILE);
    let key = VerifyingKey::from_bytes(public_key).context("[model] public_key is not a valid ed25519 public key")?;
    let text = std::fs::read_to_string(&sig_path).with_context(|| {
        format!("a model signature is required ([model] public_key is set) but {} cannot be read", sig_path.display())
    })?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(text.trim(), &mut sig)
        .map_err(|e| anyhow::anyhow!("{} is not an ed25519 signature (128 hex digits): {e}", sig_path.display()))?;
    key.verify_strict(manifest, &Signature::from_bytes(&sig)).map_err(|_| {
        anyhow::anyhow!(
            "{} does not verify {} with [model] public_key {}: the manifest was changed or signed with another key",
            sig_path.display(),
            dir.join(MANIFEST_FILE).display(),
            hex::encode(public_key)
        )
    })
}

/// Signs manifest bytes: the hex text written to `manifest.toml.sig`.
pub fn sign_manifest(manifest: &[u8], secret_key: &[u8; 32]) -> String {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(secret_key);
    format!("{}\n", hex::encode(key.sign(manifest).to_bytes()))
}

/// The public key of a secret (signing) key.
pub fn public_key(secret_key: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret_key).verifying_key().to_bytes()
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// A loaded, verified, optimised model ready to classify tensors.
pub struct Classifier {
    manifest: Manifest,
    model_path: PathBuf,
    state: TypedSimpleState,
    input: Tensor,
    positive: usize,
    /// How each node runs: [`eval_node`], or tract's own `plan::eval` (`KIDNEY_SCREEN_TRACT_ONLY`).
    eval: NodeEval,
    /// Wall time of the last [`Classifier::probability`] call, for the bench's frame loop.
    last_inference: Duration,
}

/// One node's evaluation, as `run_plan_with_eval` takes it.
type NodeEval =
    fn(&EvalContext, Option<&mut (dyn OpState + 'static)>, &TypedNode, TVec<TValue>) -> TractResult<TVec<TValue>>;

impl Classifier {
    /// Loads `dir` (manifest + model file), checking hash and shapes.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_verified(dir, None)
    }

    /// As [`Classifier::load`]; with a public key (the board profile's `[model] public_key`) the
    /// manifest's signature must verify first. The manifest is read once: the bytes verified are
    /// the bytes parsed, and they hold the model file's sha256.
    pub fn load_verified(dir: &Path, public_key: Option<&[u8; 32]>) -> Result<Self> {
        let started = Instant::now();
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_bytes = std::fs::read(&manifest_path)
            .with_context(|| format!("cannot read model manifest {}", manifest_path.display()))?;
        if let Some(key) = public_key {
            verify_manifest_signature(dir, &manifest_bytes, key)?;
        }
        let manifest = Manifest::parse(&manifest_bytes, &manifest_path)?;
        let model_path = dir.join(&manifest.file);
        let bytes =
            std::fs::read(&model_path).with_context(|| format!("cannot read model file {}", model_path.display()))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            bail!(
                "model file {} has sha256 {actual}, the manifest expects {} (corrupt or replaced model)",
                model_path.display(),
                manifest.sha256
            );
        }
        let read_ms = started.elapsed().as_secs_f64() * 1e3;
        let (w, h) = (manifest.input.width as usize, manifest.input.height as usize);
        prefer_wide_int8_tile();
        let onnx = tract_onnx::onnx();
        let model = onnx
            .model_for_read(&mut std::io::Cursor::new(&bytes))
            .with_context(|| format!("{} is not a loadable ONNX model", model_path.display()))?;
        check_declared_input(&model, [1, 3, h, w]).with_context(|| format!("model file {}", model_path.display()))?;
        let typed = model
            .with_input_fact(0, f32::fact([1, 3, h, w]).into())
            .and_then(|m| m.into_typed())
            .with_context(|| format!("cannot prepare model {} for a 1x3x{h}x{w} input", model_path.display()))?;
        let typed_ms = started.elapsed().as_secs_f64() * 1e3;
        // KIDNEY_SCREEN_TRACT_ONLY=1 keeps tract's own optimisation, ops and evaluation, to
        // measure what preparation buys.
        let tract_only = std::env::var_os("KIDNEY_SCREEN_TRACT_ONLY").is_some();
        let model = if tract_only {
            typed.into_optimized()
        } else {
            crate::model_prep::optimize_and_prepare(typed).map(|(model, prepared)| {
                log::debug!("{}: {prepared:?}", model_path.display());
                model
            })
        }
        .with_context(|| format!("cannot prepare model {} for a 1x3x{h}x{w} input", model_path.display()))?;
        ensure!(
            model.outputs.len() == 1,
            "model {} has {} outputs, expected 1",
            model_path.display(),
            model.outputs.len()
        );
        let out_fact = model.output_fact(0)?;
        let out_shape: Vec<usize> = out_fact
            .shape
            .as_concrete()
            .map(|s| s.to_vec())
            .with_context(|| format!("model {} output shape is not fixed", model_path.display()))?;
        ensure!(
            out_shape.iter().product::<usize>() == 2 && out_shape.last() == Some(&2),
            "model {} outputs shape {out_shape:?}, the manifest declares 2 classes",
            model_path.display()
        );
        let prepared_ms = started.elapsed().as_secs_f64() * 1e3;
        let plan = model.into_runnable()?;
        let state = TypedSimpleState::new(&plan)?;
        // Cold start is a target (README "Speed"): where it goes, at debug level.
        let loaded_ms = started.elapsed().as_secs_f64() * 1e3;
        log::debug!(
            "{} loaded in {loaded_ms:.0} ms: read and hash {read_ms:.0}, parse and type {:.0}, optimise and prepare {:.0}, plan {:.0}",
            model_path.display(),
            typed_ms - read_ms,
            prepared_ms - typed_ms,
            loaded_ms - prepared_ms
        );
        let positive = manifest.positive_index();
        let eval: NodeEval = if tract_only { tract_onnx::tract_core::plan::eval } else { eval_node };
        Ok(Self {
            input: Tensor::zero::<f32>(&[1, 3, h, w])?,
            manifest,
            model_path,
            state,
            positive,
            eval,
            last_inference: Duration::ZERO,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Copies one preprocessed NCHW tensor into the reused input tensor.
    fn set_input(&mut self, tensor: &[f32]) -> Result<()> {
        let mut view = self.input.try_as_plain_ram_mut()?;
        let dst = view.as_slice_mut::<f32>()?;
        ensure!(dst.len() == tensor.len(), "tensor of {} values, the model takes {}", tensor.len(), dst.len());
        dst.copy_from_slice(tensor);
        Ok(())
    }

    /// How long the last [`Classifier::probability`] call took (zero before the first).
    pub fn last_inference(&self) -> Duration {
        self.last_inference
    }

    /// Probability of the positive class for one preprocessed NCHW tensor.
    pub fn probability(&mut self, tensor: &[f32]) -> Result<f32> {
        let started = Instant::now();
        let p = on_inference_threads(|| self.run(tensor));
        self.last_inference = started.elapsed();
        p
    }

    fn run(&mut self, tensor: &[f32]) -> Result<f32> {
        self.set_input(tensor)?;
        let outputs = self.state.run_plan_with_eval(tvec!(self.input.clone().into_tvalue()), self.eval)?;
        let out_view = outputs[0].try_as_plain_ram()?;
        let out = out_view.as_slice::<f32>()?;
        let (a, b) = (out[0], out[1]);
        ensure!(a.is_finite() && b.is_finite(), "model output is not finite ({a}, {b})");
        let p = match self.manifest.output.kind {
            OutputKind::Probabilities => out[self.positive],
            OutputKind::Logits => {
                let m = a.max(b);
                let (ea, eb) = ((a - m).exp(), (b - m).exp());
                [ea, eb][self.positive] / (ea + eb)
            }
        };
        ensure!((0.0..=1.0).contains(&p), "model probability {p} is outside 0..1");
        Ok(p)
    }
}

/// Runs `f`, one inference, on the inference pool when `[model] threads` > 1; else here.
///
/// tract's matmul dispatch calls `pool.install` itself, which from a thread outside the pool
/// hands every matmul over and sleeps until it is done: 121 round trips per inference, each
/// waking a sleeping worker. On the 2-vCPU development VM that made 2 threads slower than one
/// (9 -> 11-14 ms). Run from inside the pool, those calls are inline, and the other workers spin
/// on the pool's queue for the length of the inference (`rayon::yield_now`) instead of being
/// woken per matmul, so they take their share of each matmul at once (README "Speed": threads).
/// The spinning lasts one inference; between frames the workers sleep.
fn on_inference_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tract_linalg::multithread::{Executor, current_tract_executor};
    let pool = match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => pool,
        _ => return f(),
    };
    /// Sets the flag when dropped, so that a panicking inference still releases the helpers.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    // One inference at a time in the pool: two at once could each park a helper on the worker
    // running the other's inference, and each would wait for the other to finish.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    pool.install(|| {
        let runner = rayon::current_thread_index();
        let done = AtomicBool::new(false);
        rayon::in_place_scope(|scope| {
            scope.spawn_broadcast(|_, worker| {
                // The worker running the inference gets a copy too: it has better things to do.
                if Some(worker.index()) == runner {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
            let _done = Done(&done);
            f()
        })
    })
}

/// Time spent in one kind of tract op during [`Classifier::profile_ops`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: String,
    pub nodes: usize,
    pub ms_per_run: f64,
}

impl Classifier {
    /// Runs the model `runs` times on `tensor`, timing every node, and returns the time per op
    /// kind (most expensive first). For `bench --ops`: where the inference time goes.
    pub fn profile_ops(&mut self, tensor: &[f32], runs: usize) -> Result<Vec<OpTime>> {
        on_inference_threads(|| self.profile_ops_here(tensor, runs))
    }

    fn profile_ops_here(&mut self, tensor: &[f32], runs: usize) -> Result<Vec<OpTime>> {
        use std::collections::HashMap;
        ensure!(runs > 0, "profile needs at least one run");
        self.set_input(tensor)?;
        let mut per_node: HashMap<usize, (String, f64)> = HashMap::new();
        for _ in 0..runs {
            let input = tvec!(self.input.clone().into_tvalue());
            self.state.run_plan_with_eval(input, |session, op_state, node, inputs| {
                let start = std::time::Instant::now();
                let out = (self.eval)(session, op_state, node, inputs);
                let entry = per_node.entry(node.id).or_insert_with(|| (node.op.name().to_string(), 0.0));
                entry.1 += start.elapsed().as_secs_f64();
                out
            })?;
        }
        let mut by_op: HashMap<String, (usize, f64)> = HashMap::new();
        for (name, secs) in per_node.into_values() {
            let e = by_op.entry(name).or_default();
            e.0 += 1;
            e.1 += secs;
        }
        let mut ops: Vec<OpTime> = by_op
            .into_iter()
            .map(|(op, (nodes, secs))| OpTime { op, nodes, ms_per_run: secs * 1e3 / runs as f64 })
            .collect();
        ops.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
        Ok(ops)
    }
}

/// The ONNX file's own input declaration must agree with the manifest where it is concrete.
fn check_declared_input(model: &InferenceModel, expected: [usize; 4]) -> Result<()> {
    ensure!(model.inputs.len() == 1, "model has {} inputs, expected 1", model.inputs.len());
    use tract_onnx::tract_hir::infer::Factoid;
    let fact = model.input_fact(0)?;
    if !fact.shape.is_open() {
        let dims: Vec<Option<usize>> =
            fact.shape.dims().map(|d| d.concretize().and_then(|t| t.as_i64()).map(|v| v as usize)).collect();
        ensure!(dims.len() == 4, "model input has rank {}, expected 4 (NCHW)", dims.len());
        for (i, (d, e)) in dims.iter().zip(expected).enumerate() {
            if let Some(d) = d {
                ensure!(*d == e, "model input is {dims:?}, the manifest declares {expected:?} (dimension {i} differs)");
            }
        }
    }
    Ok(())
}

/// The tract knob that says how many 512-bit FMA ports an x86 core has.
const FMA_UNITS_KNOB: &str = "TRACT_AVX512_FMA_UNITS";

/// Asks tract for its 16x16 zmm int8 kernel on AVX-512-VNNI x86, before anything probes.
///
/// tract chooses between that kernel and an 8x8 ymm one by a 1-2 ms micro-probe of 512- against
/// 256-bit `VPDPBUSD` throughput, once per process. On the development machine (AMD Zen 4) the
/// probe answered 2 on one VM and 1 on another of the same kind, which moved the benchmark by
/// 2 ms; and on this network's matmuls (M 32..512, N >= 16, K 64..1152) the 16x16 kernel is the
/// faster one there: OptMatMul 8.8 -> 6.7 ms per inference with the probe's 1 (`bench --ops`,
/// README "Speed"). So the firmware sets the knob's global value; `TRACT_AVX512_FMA_UNITS` in the
/// environment still wins (1 selects the 8x8 kernel). The int8 products are exact integers and
/// the requantization is the same code, so the verdicts do not depend on the choice. Inert on
/// other architectures.
fn prefer_wide_int8_tile() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = tract_onnx::tract_core::knobs::set_config_global(FMA_UNITS_KNOB, "2") {
            log::warn!("cannot set {FMA_UNITS_KNOB}: {e:#}");
        }
    });
}

/// Sets how many threads tract's matrix multiplications use (the board profile's
/// `[model] threads`). One thread runs on the caller's thread; more run each inference in a pool
/// of that many threads (see `on_inference_threads`).
pub fn use_threads(threads: usize) -> Result<()> {
    ensure!((1..=16).contains(&threads), "threads = {threads} must be within 1..16");
    let executor = if threads == 1 {
        tract_linalg::multithread::Executor::SingleThread
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("inference-{i}"))
            .build()
            .with_context(|| format!("cannot start {threads} inference threads"))?;
        tract_linalg::multithread::Executor::MultiThread(std::sync::Arc::new(pool))
    };
    tract_linalg::multithread::set_default_executor(executor);
    Ok(())
}
