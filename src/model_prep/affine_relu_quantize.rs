//! One pass for DenseNet's pre-activation block in front of every quantized convolution:
//! batch norm (a per-channel multiply and add), ReLU, quantize to u8, and the offset to i8 that
//! tract's int8 matmul takes.
//!
//! tract runs these as three ops over the activation (`OptBinChain(Mul+Add+Max)`, the quantize,
//! `OffsetU8asI8`), each reading what the previous one wrote: 3.7 of the 13.6 ms of the int8
//! DenseNet on the development machine (`bench --ops`). [`AffineReluQuantize`] reads the f32
//! activation once and writes the i8 one, with the same float operations in the same order, so
//! the bytes are the same (tested against the three ops).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::OptBinChain;
use tract_onnx::tract_core::ops::quant::OffsetU8asI8;

use super::{FastQuantizeU8, Fusion, PackK4, element_wise, quantize_non_negative_u8, quantize_u8, sole_consumer};

/// `max(x * scale[c] + shift[c], 0)` quantized (tract's `QuantizeLinearU8` rounding), for
/// each channel `c` of `period` consecutive values; then, if `to_i8`, offset by -128.
#[derive(Debug, Clone)]
pub struct AffineReluQuantize {
    scale: Vec<f32>,
    shift: Vec<f32>,
    period: usize,
    quantize_scale: f32,
    zero_point: u8,
    to_i8: bool,
    output: DatumType,
}

impl PartialEq for AffineReluQuantize {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        bits(&self.scale) == bits(&other.scale)
            && bits(&self.shift) == bits(&other.shift)
            && self.period == other.period
            && self.quantize_scale.to_bits() == other.quantize_scale.to_bits()
            && self.zero_point == other.zero_point
            && self.to_i8 == other.to_i8
            && self.output == other.output
    }
}

impl Eq for AffineReluQuantize {}

/// Finds `OptBinChain(Mul+Add+Max)` (per-channel constants, a constant floor) on a `[1, C, ...]`
/// f32 tensor, followed only by a [`FastQuantizeU8`] and optionally an `OffsetU8asI8`.
pub(super) fn find(model: &TypedModel, chain: usize) -> TractResult<Option<Fusion<AffineReluQuantize>>> {
    use tract_linalg::BinOp;
    let node = &model.nodes[chain];
    let Some(op) = node.op_as::<OptBinChain>() else { return Ok(None) };
    let kinds: Vec<BinOp> = op.steps.iter().map(|s| s.linalg_op).collect();
    if kinds != [BinOp::Mul, BinOp::Add, BinOp::Max] || node.inputs.len() != 4 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = input.shape.as_concrete() else { return Ok(None) };
    if input.datum_type != f32::datum_type() || shape.len() < 2 || shape[0] != 1 || shape[1] == 0 {
        return Ok(None);
    }
    let (channels, len) = (shape[1], shape.iter().product::<usize>());
    let constant = |i: usize| -> TractResult<Option<Vec<f32>>> {
        let fact = model.outlet_fact(node.inputs[i])?;
        let Some(k) = fact.konst.as_ref().filter(|k| k.datum_type() == f32::datum_type()) else { return Ok(None) };
        Ok(Some(k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
    };
    let (Some(scale), Some(shift), Some(floor)) = (constant(1)?, constant(2)?, constant(3)?) else { return Ok(None) };
    // One value per channel, each applied to a block of `period` values: tract's PerBlock share.
    use tract_linalg::multithread::BShare;
    let per_channel = |v: &[f32], share: BShare| v.len() == channels && (share == BShare::PerBlock || channels == 1);
    // A ReLU: with a floor of 0, NaN (which tract's max may keep or drop) quantizes to the zero
    // point either way.
    if !per_channel(&scale, op.steps[0].share) || !per_channel(&shift, op.steps[1].share) || floor != [0.0] {
        return Ok(None);
    }
    let Some(quantize) = sole_consumer(model, chain) else { return Ok(None) };
    let Some(fast) = element_wise::<FastQuantizeU8>(quantize) else { return Ok(None) };
    let (quantize_scale, zero_point) = (fast.scale, fast.zero_point);
    let offset = sole_consumer(model, quantize.id).filter(|next| element_wise::<OffsetU8asI8>(next).is_some());
    let last = offset.unwrap_or(quantize);
    let output = last.outputs[0].fact.datum_type;
    if output.size_of() != 1 {
        return Ok(None);
    }
    let op = AffineReluQuantize {
        scale,
        shift,
        period: len / channels,
        quantize_scale,
        zero_point,
        to_i8: offset.is_some(),
        output,
    };
    Ok(Some(Fusion { inputs: tvec![node.inputs[0]], last: last.id, op }))
}

impl AffineReluQuantize {
    fn run(&self, input: &[f32], output: &mut [u8]) {
        crate::simd::with_avx2!(self.run_portable(input, output))
    }

    #[inline(always)]
    fn run_portable(&self, input: &[f32], output: &mut [u8]) {
        for (channel, (x, y)) in input.chunks(self.period).zip(output.chunks_mut(self.period)).enumerate() {
            self.channel(channel, x, y, |x| x);
        }
    }

    /// One channel's values, each read through `load` (the identity, or a dequantize).
    #[inline(always)]
    fn channel<T: Copy>(&self, channel: usize, input: &[T], output: &mut [u8], load: impl Fn(T) -> f32) {
        let (zero_point, flip) = (f32::from(self.zero_point), if self.to_i8 { 0x80 } else { 0 });
        let (scale, shift) = (self.scale[channel], self.shift[channel]);
        // After `affine_relu` the value is +0.0 or more, never NaN: with a positive quantize scale
        // (as ONNX requires) the quantize needs no lower clamps.
        let relu = |x: T| affine_relu(load(x), scale, shift);
        let quantize_scale = self.quantize_scale;
        if quantize_scale > 0.0 && quantize_scale.is_finite() {
            for (x, y) in input.iter().zip(output.iter_mut()) {
                *y = quantize_non_negative_u8(relu(*x), quantize_scale, zero_point) ^ flip;
            }
        } else {
            for (x, y) in input.iter().zip(output.iter_mut()) {
                *y = quantize_u8(relu(*x), quantize_scale, zero_point) ^ flip;
            }
        }
    }
}

/// Batch norm + ReLU as tract's chain computes it: multiply, add, then max (two roundings, no
/// fused multiply-add). The result is +0.0 or more, never NaN.
#[inline(always)]
fn affine_relu(x: f32, scale: f32, shift: f32) -> f32 {
    let v = x * scale + shift;
    if v > 0.0 { v } else { 0.0 }
}

/// tract's `DequantizeLinearF32` of one byte: `(q as i32 - zero_point) as f32 * scale`.
#[inline(always)]
fn dequantize(q: u8, scale: f32, zero_point: i32) -> f32 {
    (i32::from(q) - zero_point) as f32 * scale
}

/// How a [`ConcatAffineReluQuantize`] reads one of its inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece {
    F32 {
        channels: usize,
    },
    /// u8 values that tract's `DequantizeLinearF32` would turn into f32:
    /// `(x as i32 - zero_point) as f32 * scale`.
    Dequantize {
        channels: usize,
        scale: f32,
        zero_point: i32,
    },
}

impl Piece {
    fn channels(&self) -> usize {
        match *self {
            Piece::F32 { channels } | Piece::Dequantize { channels, .. } => channels,
        }
    }
}

/// DenseNet's channel concatenation of the features so far, with the [`AffineReluQuantize`] that
/// is its only reader, reading each piece where it is: no concatenated f32 copy, and the
/// dense layers' outputs read as their u8 values (dequantized in registers, the same
/// operations as tract's) instead of through one f32 copy each.
///
/// Every dense layer concatenates all the maps of its block so far (`Concat` 0.26 ms per
/// inference, the dequantizes 0.12 ms, and [`AffineReluQuantize`] reading 4 bytes per value).
#[derive(Debug, Clone)]
pub struct ConcatAffineReluQuantize {
    affine: AffineReluQuantize,
    pieces: Vec<Piece>,
}

impl PartialEq for ConcatAffineReluQuantize {
    fn eq(&self, other: &Self) -> bool {
        let bits = |p: &Piece| match *p {
            Piece::F32 { channels } => (channels, 0, u32::MAX, 0),
            Piece::Dequantize { channels, scale, zero_point } => (channels, 1, scale.to_bits(), zero_point),
        };
        self.affine == other.affine
            && self.pieces.len() == other.pieces.len()
            && self.pieces.iter().zip(&other.pieces).all(|(a, b)| bits(a) == bits(b))
    }
}

impl Eq for ConcatAffineReluQuantize {}

/// Finds an [`AffineReluQuantize`] whose input is a channel `Concat` of `[1, C, ...]` maps that
/// it alone reads. Pieces made by `DequantizeLinearF32` from u8 are read before the dequantize.
pub(super) fn find_concat(model: &TypedModel, affine: usize) -> TractResult<Option<Fusion<ConcatAffineReluQuantize>>> {
    use tract_onnx::tract_core::ops::array::TypedConcat;
    use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;
    let node = &model.nodes[affine];
    let Some(op) = node.op_as::<AffineReluQuantize>() else { return Ok(None) };
    let concat = &model.nodes[node.inputs[0].node];
    let Some(concat_op) = concat.op_as::<TypedConcat>() else { return Ok(None) };
    if concat_op.axis != 1 || sole_consumer(model, concat.id).map(|n| n.id) != Some(affine) {
        return Ok(None);
    }
    let mut inputs = TVec::with_capacity(concat.inputs.len());
    let mut pieces = Vec::with_capacity(concat.inputs.len());
    for &outlet in &concat.inputs {
        let fact = model.outlet_fact(outlet)?;
        let Some(shape) = fact.shape.as_concrete() else { return Ok(None) };
        if fact.datum_type != f32::datum_type() || shape.len() < 2 || shape[0] != 1 {
            return Ok(None);
        }
        if shape[1] == 0 || shape.iter().skip(2).product::<usize>() != op.period {
            return Ok(None);
        }
        let producer = &model.nodes[outlet.node];
        let dequantize = producer.op_as::<DequantizeLinearF32>().filter(|_| producer.inputs.len() == 1);
        let source = match dequantize {
            Some(dq) if model.outlet_fact(producer.inputs[0])?.datum_type == u8::datum_type() => {
                pieces.push(Piece::Dequantize { channels: shape[1], scale: dq.scale, zero_point: dq.zero_point });
                producer.inputs[0]
            }
            _ => {
                pieces.push(Piece::F32 { channels: shape[1] });
                outlet
            }
        };
        inputs.push(source);
    }
    if pieces.iter().map(Piece::channels).sum::<usize>() != op.scale.len() {
        return Ok(None);
    }
    Ok(Some(Fusion { inputs, last: affine, op: ConcatAffineReluQuantize { affine: op.clone(), pieces } }))
}

/// One input's values, as [`Piece`] says to read them.
enum PieceValues<'a> {
    F32(&'a [f32]),
    Dequantize { values: &'a [u8], scale: f32, zero_point: i32 },
}

impl ConcatAffineReluQuantize {
    /// Each input's values as its piece says to read them, lengths checked.
    fn piece_values<'a>(&self, inputs: &[TValue], plains: &'a [PlainView<'a>]) -> TractResult<Vec<PieceValues<'a>>> {
        ensure!(inputs.len() == self.pieces.len(), "{} takes {} inputs", self.name(), self.pieces.len());
        let mut values = Vec::with_capacity(inputs.len());
        for ((piece, plain), input) in self.pieces.iter().zip(plains).zip(inputs) {
            let (piece_values, len) = match *piece {
                Piece::F32 { .. } => {
                    let v = plain.as_slice::<f32>()?;
                    (PieceValues::F32(v), v.len())
                }
                Piece::Dequantize { scale, zero_point, .. } => {
                    let v = plain.as_slice::<u8>()?;
                    (PieceValues::Dequantize { values: v, scale, zero_point }, v.len())
                }
            };
            ensure!(
                len == piece.channels() * self.affine.period,
                "{} input has shape {:?}",
                self.name(),
                input.shape()
            );
            values.push(piece_values);
        }
        Ok(values)
    }

    fn run(&self, inputs: &[PieceValues], output: &mut [u8]) {
        crate::simd::with_avx512!(self.run_portable(inputs, output))
    }

    #[inline(always)]
    fn run_portable(&self, inputs: &[PieceValues], output: &mut [u8]) {
        let period = self.affine.period;
        let mut rows = output.chunks_mut(period).enumerate();
        for values in inputs {
            match *values {
                PieceValues::Dequantize { values, scale, zero_point } => {
                    for (x, (channel, y)) in values.chunks(period).zip(rows.by_ref()) {
                        self.affine.channel(channel, x, y, |q: u8| dequantize(q, scale, zero_point));
                    }
                }
                PieceValues::F32(values) => {
                    for (x, (channel, y)) in values.chunks(period).zip(rows.by_ref()) {
                        self.affine.channel(channel, x, y, |x| x);
                    }
                }
            }
        }
    }
}

impl Op for ConcatAffineReluQuantize {
    fn name(&self) -> StaticName {
        "ConcatAffineReluQuantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ConcatAffineReluQuantize {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plains = inputs.iter().map(|i| i.try_as_plain_ram()).collect::<TractResult<Vec<_>>>()?;
        let values = self.piece_values(&inputs, &plains)?;
        let mut shape: TVec<usize> = inputs[0].shape().into();
        shape[1] = self.affine.scale.len();
        // SAFETY: one-byte values, all written by `run` (the pieces' channels add up to the
        // output's, checked when the op was made, and each piece's length is checked above).
        let mut output = unsafe { Tensor::uninitialized_dt(self.affine.output, &shape)? };
        self.run(&values, output.as_bytes_mut());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ConcatAffineReluQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.clone();
        shape.set(1, self.affine.scale.len().to_dim());
        Ok(tvec!(self.affine.output.fact(shape)))
    }

    as_op!();
}

/// A [`ConcatAffineReluQuantize`] (or a lone [`AffineReluQuantize`]) whose only reader is the
/// [`PackK4`] of a 1x1 convolution, writing that packing's K=4-inner panels itself.
///
/// Each column of a K=4-inner panel is four channels' bytes at one position: this computes the
/// four channels together and stores each position's bytes as one 32-bit word, straight into
/// the panel. The byte tensor between the two ops is never written and read back, and there is
/// no narrowing to bytes and re-interleaving. The arithmetic is [`AffineReluQuantize::channel`]'s
/// and the layout [`PackK4`]'s, so the bytes are the same (tested against the two ops).
///
/// On large maps, dequantized pieces (the dense layers' u8 outputs) are instead looked up in a
/// per-channel table of all 256 input bytes made at load time by the same arithmetic: 64
/// positions of four channels in about 30 vector instructions instead of about 200.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedAffineReluQuantize {
    concat: ConcatAffineReluQuantize,
    pack: PackK4,
    /// For each channel of a dequantized piece, where [`uses_tables`] says so, its 256 output
    /// bytes (channel-major, 256 per channel; unused rows for float pieces are 0); else empty.
    tables: Vec<u8>,
}

/// The smallest map (positions per channel) for which [`PackedAffineReluQuantize`] looks
/// dequantized pieces up in per-channel tables: a 256-byte table per channel costs as much
/// memory traffic as the channel's bytes at 256 positions, so below that the arithmetic is
/// cheaper. In the shipped 128x128 model: dense blocks 1 and 2 (1024 and 256 positions), 1.4 MB
/// of tables.
const TABLE_MIN_PERIOD: usize = 256;

/// Whether dequantized pieces of `period` positions, packed in panels of `r`, go through tables:
/// 64 positions per step on AVX-512 VBMI with the 16-wide panels of tract's 16x16 VNNI kernel.
fn uses_tables(period: usize, r: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    let byte_permutes = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vbmi");
    #[cfg(not(target_arch = "x86_64"))]
    let byte_permutes = false;
    period >= TABLE_MIN_PERIOD && r == 16 && byte_permutes
}

/// Batch norm + ReLU + quantize of one value with a positive, finite quantize scale: the one
/// definition the packed arithmetic path and the tables share.
#[inline(always)]
fn pre_activation(x: f32, scale: f32, shift: f32, quantize_scale: f32, zero_point: f32) -> u32 {
    u32::from(quantize_non_negative_u8(affine_relu(x, scale, shift), quantize_scale, zero_point))
}

/// Panels [`PackedAffineReluQuantize`] writes at a time, each group of four channels in turn:
/// a few write streams, each group's rows read in runs.
const PACK_PANELS: usize = 16;

/// Finds a [`ConcatAffineReluQuantize`] or [`AffineReluQuantize`] whose output, through a
/// reshape, is packed by a [`PackK4`] of its consecutive channel rows, read by nothing else.
pub(super) fn find_packed(model: &TypedModel, id: usize) -> TractResult<Option<Fusion<PackedAffineReluQuantize>>> {
    use tract_onnx::tract_core::ops::change_axes::IntoShape;
    let node = &model.nodes[id];
    let concat = if let Some(op) = node.op_as::<ConcatAffineReluQuantize>() {
        op.clone()
    } else if let Some(op) = node.op_as::<AffineReluQuantize>() {
        ConcatAffineReluQuantize { affine: op.clone(), pieces: vec![Piece::F32 { channels: op.scale.len() }] }
    } else {
        return Ok(None);
    };
    let Some(reshape) = sole_consumer(model, id).filter(|n| n.op_is::<IntoShape>()) else { return Ok(None) };
    let Some(pack_node) = sole_consumer(model, reshape.id) else { return Ok(None) };
    let Some(pack) = pack_node.op_as::<PackK4>() else { return Ok(None) };
    let (channels, period) = (concat.affine.scale.len(), concat.affine.period);
    let Some(format) = pack.packs_rows(channels, period) else { return Ok(None) };
    // Whole groups of four channels in each piece (DenseNet's pieces are 32 or 64 channels), a
    // ReLU's quantize scale, a panel width of the int8 kernels.
    let whole_groups = concat.pieces.iter().all(|piece| piece.channels() % 4 == 0);
    let scale = concat.affine.quantize_scale;
    let fits = whole_groups
        && scale > 0.0
        && scale.is_finite()
        && [4, 8, 16].contains(&format.r)
        && pack.output_fact().datum_type == concat.affine.output;
    if !fits {
        return Ok(None);
    }
    let op = PackedAffineReluQuantize::new(concat, pack.clone(), format.r);
    Ok(Some(Fusion { inputs: node.inputs.iter().copied().collect(), last: pack_node.id, op }))
}

impl std::fmt::Debug for PackedAffineReluQuantize {
    /// Without the tables' bytes (hundreds of kilobytes in tract's debug logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedAffineReluQuantize")
            .field("concat", &self.concat)
            .field("pack", &self.pack)
            .field("table_bytes", &self.tables.len())
            .finish()
    }
}

impl PackedAffineReluQuantize {
    /// The op, with its tables where [`uses_tables`] says so: each dequantized channel's output
    /// for all 256 input bytes, computed by the same [`pre_activation`] as the arithmetic path.
    fn new(concat: ConcatAffineReluQuantize, pack: PackK4, r: usize) -> Self {
        let affine = &concat.affine;
        let mut tables = vec![];
        if uses_tables(affine.period, r) {
            tables = vec![0u8; 256 * affine.scale.len()];
            let (quantize_scale, zero_point) = (affine.quantize_scale, f32::from(affine.zero_point));
            let flip = if affine.to_i8 { 0x80 } else { 0 };
            let mut channel = 0;
            for piece in &concat.pieces {
                if let Piece::Dequantize { channels, scale, zero_point: piece_zero_point } = *piece {
                    for c in channel..channel + channels {
                        for (q, entry) in (0..=u8::MAX).zip(&mut tables[256 * c..][..256]) {
                            let x = dequantize(q, scale, piece_zero_point);
                            let y = pre_activation(x, affine.scale[c], affine.shift[c], quantize_scale, zero_point);
                            *entry = y as u8 ^ flip;
                        }
                    }
                }
                channel += piece.channels();
            }
        }
        PackedAffineReluQuantize { concat, pack, tables }
    }

    fn run(&self, inputs: &[PieceValues], packed: &mut [u8], r: usize, panel_len: usize) {
        match r {
            16 => crate::simd::with_avx512!(self.run_portable::<16>(inputs, packed, panel_len)),
            8 => crate::simd::with_avx512!(self.run_portable::<8>(inputs, packed, panel_len)),
            _ => crate::simd::with_avx512!(self.run_portable::<4>(inputs, packed, panel_len)),
        }
    }

    /// `PACK_PANELS` panels at a time, and in them each group of four channels: one block of
    /// `4 R` bytes per panel.
    #[inline(always)]
    fn run_portable<const R: usize>(&self, inputs: &[PieceValues], packed: &mut [u8], panel_len: usize) {
        let period = self.concat.affine.period;
        // With tables, each dequantized group's whole 64-position steps first, over the whole
        // map: its four tables are loaded once, not once per chunk.
        let through_tables = self.quads_through_tables(inputs, packed, panel_len);
        for (chunk, panels) in packed.chunks_mut(PACK_PANELS * panel_len).enumerate() {
            let start = chunk * PACK_PANELS * R;
            let len = (PACK_PANELS * R).min(period - start);
            let mut group = 0;
            for values in inputs {
                match *values {
                    PieceValues::F32(v) => {
                        for rows in v.chunks_exact(4 * period) {
                            let row = |lane: usize| &rows[lane * period + start..][..len];
                            self.quads::<R, f32>(group, [row(0), row(1), row(2), row(3)], panels, panel_len, |x| x);
                            group += 1;
                        }
                    }
                    PieceValues::Dequantize { values, scale, zero_point } => {
                        // The positions the tables did not cover (a multiple of R: of 64).
                        let done = through_tables.saturating_sub(start).min(len);
                        let panels = &mut panels[done / R * panel_len..];
                        for rows in values.chunks_exact(4 * period) {
                            let row = |lane: usize| &rows[lane * period + start + done..][..len - done];
                            let load = |q: u8| dequantize(q, scale, zero_point);
                            self.quads::<R, u8>(group, [row(0), row(1), row(2), row(3)], panels, panel_len, load);
                            group += 1;
                        }
                    }
                }
            }
        }
    }

    /// Channels `4 group .. 4 group + 4` at the positions of `rows` (one chunk), into the
    /// group's block of each of the chunk's panels; a last, partial panel's spare columns get 0.
    #[inline(always)]
    fn quads<const R: usize, T: Copy>(
        &self,
        group: usize,
        rows: [&[T]; 4],
        panels: &mut [u8],
        panel_len: usize,
        load: impl Fn(T) -> f32 + Copy,
    ) {
        let affine = &self.concat.affine;
        let channel = 4 * group;
        let scale: [f32; 4] = std::array::from_fn(|lane| affine.scale[channel + lane]);
        let shift: [f32; 4] = std::array::from_fn(|lane| affine.shift[channel + lane]);
        let (quantize_scale, zero_point) = (affine.quantize_scale, f32::from(affine.zero_point));
        let flip = if affine.to_i8 { 0x8080_8080 } else { 0 };
        // The op is only made with a positive, finite quantize scale (`find_packed`).
        let byte = |lane: usize, x: T| pre_activation(load(x), scale[lane], shift[lane], quantize_scale, zero_point);
        let word = |x: [T; 4]| (byte(0, x[0]) | byte(1, x[1]) << 8 | byte(2, x[2]) << 16 | byte(3, x[3]) << 24) ^ flip;
        let len = rows[0].len();
        for (panel, first) in panels.chunks_exact_mut(panel_len).zip((0..len).step_by(R)) {
            let (words, _) = panel[group * 4 * R..][..4 * R].as_chunks_mut::<4>();
            if len - first >= R {
                // Fixed-length arrays: no bounds checks, and the loop is whole vectors.
                let words: &mut [[u8; 4]; R] = words.try_into().expect("R words");
                let run = |lane: usize| -> &[T; R] { rows[lane][first..][..R].try_into().expect("R values") };
                let (a, b, c, d) = (run(0), run(1), run(2), run(3));
                for i in 0..R {
                    words[i] = word([a[i], b[i], c[i], d[i]]).to_le_bytes();
                }
            } else {
                // The kernel also reads the last panel's spare columns.
                for (i, w) in words.iter_mut().enumerate() {
                    let x = |lane: usize| rows[lane][first + i];
                    *w = if first + i < len { word([x(0), x(1), x(2), x(3)]).to_le_bytes() } else { [0; 4] };
                }
            }
        }
    }
}

/// Where a 64-byte step's position `k` is read from so that [`quads_through_tables_avx512vbmi`]'s
/// unpacks leave positions in order: the unpacks work within 128-bit lanes, so word `j` of lane
/// `l` of their `i`-th result holds the four channels' bytes `16 l + 4 i + j`; reading position
/// `16 i + 4 l + j` there puts positions `16 i ..= 16 i + 15` in the `i`-th result, in order.
#[cfg(target_arch = "x86_64")]
const STEP_ORDER: [u8; 64] = {
    let mut order = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        let (l, i, j) = (k / 16, k % 16 / 4, k % 4);
        order[k] = (16 * i + 4 * l + j) as u8;
        k += 1;
    }
    order
};

impl PackedAffineReluQuantize {
    /// Every dequantized group's whole 64-position steps through its channels' tables, into its
    /// block of each panel; returns how many positions of each map that covered (0 without
    /// tables).
    #[inline(always)]
    fn quads_through_tables(&self, inputs: &[PieceValues], packed: &mut [u8], panel_len: usize) -> usize {
        let period = self.concat.affine.period;
        if self.tables.is_empty() {
            return 0;
        }
        let mut group = 0;
        for values in inputs {
            match *values {
                PieceValues::F32(v) => group += v.len() / (4 * period),
                PieceValues::Dequantize { values, .. } => {
                    for rows in values.chunks_exact(4 * period) {
                        let row = |lane: usize| &rows[lane * period..][..period];
                        let table = |lane: usize| -> &[u8; 256] {
                            self.tables[256 * (4 * group + lane)..][..256].try_into().expect("256-byte table")
                        };
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: there are tables only where `uses_tables` found AVX-512 F, BW
                        // and VBMI.
                        unsafe {
                            let tables = [table(0), table(1), table(2), table(3)];
                            quads_through_tables_avx512vbmi(
                                tables,
                                [row(0), row(1), row(2), row(3)],
                                group,
                                packed,
                                panel_len,
                            );
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        let _ = (table, row, &packed, panel_len);
                        group += 1;
                    }
                }
            }
        }
        period / 64 * 64
    }
}

/// The whole 64-position steps of one group's `rows`, 64 positions of four channels per step:
/// each channel's bytes reordered by [`STEP_ORDER`] and looked up in its table (two 128-entry
/// `vpermi2b` and a blend on the top bit, as `ByteTable`), then interleaved by two rounds of
/// unpacks into four 64-byte blocks of 16 positions' 32-bit words: one 16-wide panel's block
/// each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn quads_through_tables_avx512vbmi(
    tables: [&[u8; 256]; 4],
    rows: [&[u8]; 4],
    group: usize,
    panels: &mut [u8],
    panel_len: usize,
) {
    use std::arch::x86_64::*;
    const R: usize = 16;
    // SAFETY (loads): `STEP_ORDER` is 64 bytes and each table 256; row loads read
    // `row[first..first + 64]` with `first + 64 <= len`, the length of every row.
    let order = unsafe { _mm512_loadu_si512(STEP_ORDER.as_ptr().cast()) };
    let quarters = |table: &[u8; 256]| -> [__m512i; 4] {
        std::array::from_fn(|i| unsafe { _mm512_loadu_si512(table.as_ptr().add(64 * i).cast()) })
    };
    let t = tables.map(quarters);
    let len = rows.iter().map(|row| row.len()).min().unwrap_or(0);
    let mut first = 0;
    while first + 64 <= len {
        let bytes: [__m512i; 4] = std::array::from_fn(|lane| {
            let x = unsafe { _mm512_loadu_si512(rows[lane].as_ptr().add(first).cast()) };
            let x = _mm512_permutexvar_epi8(order, x);
            let low = _mm512_permutex2var_epi8(t[lane][0], x, t[lane][1]);
            let high = _mm512_permutex2var_epi8(t[lane][2], x, t[lane][3]);
            _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), low, high)
        });
        let (ab_low, ab_high) = (_mm512_unpacklo_epi8(bytes[0], bytes[1]), _mm512_unpackhi_epi8(bytes[0], bytes[1]));
        let (cd_low, cd_high) = (_mm512_unpacklo_epi8(bytes[2], bytes[3]), _mm512_unpackhi_epi8(bytes[2], bytes[3]));
        let words = [
            _mm512_unpacklo_epi16(ab_low, cd_low),
            _mm512_unpackhi_epi16(ab_low, cd_low),
            _mm512_unpacklo_epi16(ab_high, cd_high),
            _mm512_unpackhi_epi16(ab_high, cd_high),
        ];
        for (i, words) in words.into_iter().enumerate() {
            let block = &mut panels[(first / R + i) * panel_len + group * 4 * R..][..4 * R];
            // SAFETY: `block` is 64 bytes (sliced just above).
            unsafe { _mm512_storeu_si512(block.as_mut_ptr().cast(), words) };
        }
        first += 64;
    }
}

impl Op for PackedAffineReluQuantize {
    fn name(&self) -> StaticName {
        "PackedAffineReluQuantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PackedAffineReluQuantize {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plains = inputs.iter().map(|i| i.try_as_plain_ram()).collect::<TractResult<Vec<_>>>()?;
        let values = self.concat.piece_values(&inputs, &plains)?;
        // The packing's layout was checked when the op was made (`packs_rows` in `find_packed`).
        let format = self.pack.format();
        let (r, panel_len) = (format.r, format.single_panel_len(self.concat.affine.scale.len()));
        ensure!(
            panel_len == 4 * r * (self.concat.affine.scale.len() / 4),
            "PackedAffineReluQuantize panel of {panel_len} bytes"
        );
        // SAFETY: `run` writes every byte of every panel: each group's block of each panel, with
        // the last panel's spare columns as 0 (the channels are whole groups of four, checked
        // when the op was made, so there are no K padding rows; the panel length is checked
        // above).
        let packed = unsafe { self.pack.packed_tensor(|packed| self.run(&values, packed, r, panel_len))? };
        Ok(tvec!(packed.into_tvalue()))
    }
}

impl TypedOp for PackedAffineReluQuantize {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.pack.output_fact().clone()))
    }

    as_op!();
}

impl Op for AffineReluQuantize {
    fn name(&self) -> StaticName {
        "AffineReluQuantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for AffineReluQuantize {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("AffineReluQuantize takes an input")?;
        let plain = input.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        ensure!(
            values.len() == self.period * self.scale.len(),
            "AffineReluQuantize input has shape {:?}",
            input.shape()
        );
        // SAFETY: one-byte values, all written by `run` (input and output have the same length).
        let mut output = unsafe { Tensor::uninitialized_dt(self.output, input.shape())? };
        self.run(values, output.as_bytes_mut());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for AffineReluQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8;

    /// tract's three steps, one value at a time: multiply, add, max with 0 (f32::max: NaN gives
    /// 0), `QuantizeLinearU8`'s function, then `OffsetU8asI8`'s.
    fn reference(x: f32, scale: f32, shift: f32, quantize_scale: f32, zero_point: u8) -> u8 {
        let v = (x * scale + shift).max(0.0);
        let q = quantize_linear_f32_u8(v, quantize_scale, i32::from(zero_point));
        (q.wrapping_sub(128) as i8) as u8
    }

    fn op(scale: Vec<f32>, shift: Vec<f32>, period: usize, quantize_scale: f32, zero_point: u8) -> AffineReluQuantize {
        AffineReluQuantize { scale, shift, period, quantize_scale, zero_point, to_i8: true, output: i8::datum_type() }
    }

    #[test]
    fn edge_values_match_tracts_steps() {
        let xs = [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, 3e38, -3e38];
        let channels = [(1.0, 0.0), (0.37, -0.2), (-2.0, 1.0), (1e-3, 0.5)];
        // A positive quantize scale takes the short path; the others (not valid ONNX, but
        // tract runs them) the general one. Zero point 0: with another, tract's own function
        // overflows i32 on the infinite and 3e38 inputs.
        for quantize_scale in [1.0 / 0.0235, -3.0, f32::INFINITY] {
            let zero_point = 0;
            let op = op(
                channels.map(|c| c.0).to_vec(),
                channels.map(|c| c.1).to_vec(),
                xs.len(),
                quantize_scale,
                zero_point,
            );
            let input: Vec<f32> = channels.iter().flat_map(|_| xs).collect();
            let mut output = vec![0u8; input.len()];
            op.run(&input, &mut output);
            for (i, (x, y)) in input.iter().zip(&output).enumerate() {
                let (scale, shift) = channels[i / xs.len()];
                assert_eq!(
                    *y,
                    reference(*x, scale, shift, quantize_scale, zero_point),
                    "x {x} scale {scale} shift {shift} quantize scale {quantize_scale}"
                );
            }
        }
    }

    /// The fused concatenation against tract's ops one after the other: dequantize the u8
    /// pieces, concatenate, then the reference chain.
    #[test]
    fn concat_pieces_match_dequantize_concat_and_tracts_steps() {
        use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;
        let period = 37;
        let float_piece: Vec<f32> = (0..2 * period).map(|i| (i as f32 - 30.0) * 0.173).collect();
        let byte_pieces: [(Vec<u8>, f32, i32); 2] = [
            ((0..3 * period).map(|i| (i * 7 % 256) as u8).collect(), 0.0417, 113),
            ((0..period).map(|i| (255 - i * 5 % 256) as u8).collect(), 0.0031, 0),
        ];
        let channels = 2 + 3 + 1;
        let scale: Vec<f32> =
            (0..channels).map(|c| 0.3 + c as f32 * 0.41 * if c % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let shift: Vec<f32> = (0..channels).map(|c| c as f32 * 0.07 - 0.2).collect();
        let (quantize_scale, zero_point) = (1.0 / 0.0235, 3);
        let affine = op(scale.clone(), shift.clone(), period, quantize_scale, zero_point);
        let mut pieces = vec![Piece::F32 { channels: 2 }];
        let mut inputs = vec![Tensor::from_shape(&[1, 2, period], &float_piece).unwrap().into_tvalue()];
        let mut concatenated = float_piece.clone();
        for (bytes, dq_scale, dq_zero) in &byte_pieces {
            let c = bytes.len() / period;
            pieces.push(Piece::Dequantize { channels: c, scale: *dq_scale, zero_point: *dq_zero });
            let tensor = Tensor::from_shape(&[1, c, period], bytes).unwrap();
            let dequantize = DequantizeLinearF32 { scale: *dq_scale, zero_point: *dq_zero };
            let out = dequantize.eval_out_of_plan(tvec!(tensor.clone().into_tvalue())).unwrap().unwrap();
            concatenated.extend_from_slice(out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap());
            inputs.push(tensor.into_tvalue());
        }
        let fused = ConcatAffineReluQuantize { affine, pieces };
        let out = fused.eval_out_of_plan(inputs.into()).unwrap().unwrap();
        assert_eq!(out[0].shape(), &[1, channels, period]);
        let got = out[0].try_as_plain_ram().unwrap().as_bytes().to_vec();
        let expected: Vec<u8> = concatenated
            .iter()
            .enumerate()
            .map(|(i, &x)| reference(x, scale[i / period], shift[i / period], quantize_scale, zero_point))
            .collect();
        assert_eq!(got, expected);
    }

    /// The packed pre-activation against the two ops it replaces: the concatenation's bytes,
    /// then [`PackK4`]'s panels. Periods that are and are not whole panels, one chunk or several,
    /// the panel widths of tract's int8 kernels.
    #[test]
    fn packed_pre_activation_matches_concat_then_pack() {
        use super::super::pack_k4::packed_bytes;
        use tract_linalg::pack::PackedI8K4;
        for (period, r) in [(37, 16), (1024, 16), (600, 16), (49, 8), (16, 16), (3, 4), (1100, 8)] {
            // 4 float channels, then 8 and 4 from bytes: 16 channels, 4 groups across pieces.
            let pieces = [(4usize, None), (8, Some((0.0417f32, 113))), (4, Some((0.0031, 0)))];
            let channels: usize = pieces.iter().map(|p| p.0).sum();
            let mut inputs: TVec<TValue> = tvec![];
            let mut piece_kinds = vec![];
            for (i, (c, dequantize)) in pieces.iter().enumerate() {
                let n = c * period;
                match dequantize {
                    None => {
                        let v: Vec<f32> = (0..n).map(|j| ((j * 37 + i) % 101) as f32 * 0.21 - 9.0).collect();
                        inputs.push(Tensor::from_shape(&[1, *c, period], &v).unwrap().into_tvalue());
                        piece_kinds.push(Piece::F32 { channels: *c });
                    }
                    Some((scale, zero_point)) => {
                        let v: Vec<u8> = (0..n).map(|j| ((j * 7 + 3 * i) % 256) as u8).collect();
                        inputs.push(Tensor::from_shape(&[1, *c, period], &v).unwrap().into_tvalue());
                        piece_kinds.push(Piece::Dequantize { channels: *c, scale: *scale, zero_point: *zero_point });
                    }
                }
            }
            let scale: Vec<f32> =
                (0..channels).map(|c| 0.3 + c as f32 * 0.19 * if c % 3 == 0 { -1.0 } else { 1.0 }).collect();
            let shift: Vec<f32> = (0..channels).map(|c| c as f32 * 0.11 - 0.7).collect();
            let affine = op(scale, shift, period, 1.0 / 0.0235, 3);
            let concat = ConcatAffineReluQuantize { affine, pieces: piece_kinds };
            let pack = PackK4::of_rows(PackedI8K4::new(r), channels, period, i8::fact([1]));
            let fused = PackedAffineReluQuantize::new(concat.clone(), pack.clone(), r);
            let bytes = concat.eval_out_of_plan(inputs.clone()).unwrap().unwrap().remove(0);
            let expected = pack.eval_out_of_plan(tvec![bytes]).unwrap().unwrap().remove(0);
            let got = fused.eval_out_of_plan(inputs).unwrap().unwrap().remove(0);
            assert_eq!(packed_bytes(&got), packed_bytes(&expected), "period {period} r {r}");
        }
    }

    proptest! {
        #[test]
        fn any_values_match_tracts_steps(
            xs in prop::collection::vec(-1e3f32..1e3, 1..64),
            scale in -4f32..4.0, shift in -4f32..4.0, quantize_scale in 1e-2f32..1e3, zero_point: u8,
        ) {
            let op = op(vec![scale], vec![shift], xs.len(), quantize_scale, zero_point);
            let mut output = vec![0u8; xs.len()];
            op.run(&xs, &mut output);
            for (x, y) in xs.iter().zip(&output) {
                prop_assert_eq!(*y, reference(*x, scale, shift, quantize_scale, zero_point));
            }
        }
    }
}
