//! The K=4-inner panel layout of tract's int8 kernels (`PackedI8K4`: x86 AVX-512-VNNI and
//! AVX-VNNI, aarch64 SDOT), written four K rows at a time, and [`PackK4`], the activation packing
//! of 1x1 convolutions in that layout.
//!
//! A panel holds `r` columns; for each group of four K rows it stores, column after column, the
//! column's four bytes. tract's `PackedI8K4::pack_view` zeroes the panel and then stores one byte
//! at a time (1.14 ms of the int8 DenseNet's inference on the development machine, `bench
//! --ops`; 0.22 ms with [`PackK4`]). [`interleave_groups`] writes whole groups, the 16-, 8- and
//! 4-column runs in SSE2 byte unpacks (x86) or NEON `st4` (aarch64); [`interleave_k4`] the last,
//! partial group of a K that is not a multiple of 4.

use tract_linalg::mmm::{EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::pack::PackedI8K4;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};

/// A `k` x `mn` matrix in `format`, as tract's matmul reads it (`EagerPackedInput`), its
/// `mn.div_ceil(r)` panels written by `fill`.
///
/// # Safety
/// `fill` must write every byte of the slice it gets: the buffer starts uninitialised (the packing
/// writes it all once; zeroing it first would be a second pass).
pub(super) unsafe fn packed_matrix(
    format: &PackedI8K4,
    datum_type: DatumType,
    k: usize,
    mn: usize,
    fill: impl FnOnce(&mut [u8]),
) -> TractResult<Box<dyn MMMInputValue>> {
    let panel_len = format.single_panel_len(k);
    // SAFETY: the caller's `fill` writes every byte before anything reads them.
    let mut data = unsafe {
        Tensor::uninitialized_aligned_dt(datum_type, &[mn.div_ceil(format.r) * panel_len], format.alignment())?
    };
    fill(data.as_bytes_mut());
    Ok(Box::new(EagerPackedInput {
        fact: PackedExoticFact { format: Box::new(format.clone()), k, mn: mn.to_dim() },
        packed: data.into_blob()?.into(),
        panel_bytes: if mn > 0 { panel_len } else { 0 },
        mn,
    }))
}

/// Pseudo-random bytes for the packers' tests.
#[cfg(test)]
pub(super) fn random_bytes(len: usize, seed: u64) -> Vec<i8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as i8
        })
        .collect()
}

/// The first packed matrix of a `PackedMatrixStorage` tensor: its bytes, panel length and MN.
#[cfg(test)]
pub(super) fn packed_bytes(tensor: &Tensor) -> (Vec<u8>, usize, usize) {
    let storage = tensor.try_storage_as::<PackedMatrixStorage>().expect("packed storage");
    let value = storage.value_at_flat(0).downcast_ref::<EagerPackedInput>().expect("eager packed input");
    (value.packed.as_bytes().to_vec(), value.panel_bytes, value.mn)
}

/// Where byte `(k, row)` of one `PackedI8K4` panel of `r` rows sits: K in groups of four, each
/// row's four bytes of a group side by side (the layout the VNNI, SDOT and AMX B-side kernels read).
#[inline(always)]
pub(super) fn k4_offset(r: usize, k: usize, row: usize) -> usize {
    (k / 4) * 4 * r + 4 * row + k % 4
}

/// Writes `block` (4 bytes per column) from up to four K rows of equal length: column `i` gets
/// `[a[i], b[i], c[i], d[i]]`, and a missing row (past the end of K) gives 0.
#[inline(always)]
pub(super) fn interleave_k4(block: &mut [u8], rows: [Option<&[u8]>; 4]) {
    for (lane, row) in rows.iter().enumerate() {
        for (i, quad) in block.chunks_exact_mut(4).enumerate() {
            quad[lane] = row.map_or(0, |values| values[i]);
        }
    }
}

/// Writes one run of `len` columns of a panel for every full group of four K rows: the rows of
/// group `g` start at `source[groups[g][i]..]`, and its block is `panel[g * 4 * r + 4 * lane..]`.
/// The 16-, 8- and 4-column runs of DenseNet's feature maps go through vector registers.
#[inline(always)]
pub(super) fn interleave_groups(
    panel: &mut [u8],
    r: usize,
    lane: usize,
    len: usize,
    source: &[u8],
    groups: &[[usize; 4]],
) {
    match len {
        16 => interleave_groups_fixed::<16>(panel, r, lane, source, groups),
        8 => interleave_groups_fixed::<8>(panel, r, lane, source, groups),
        4 => interleave_groups_fixed::<4>(panel, r, lane, source, groups),
        _ => {
            for (block, offsets) in panel.chunks_exact_mut(4 * r).zip(groups) {
                let block = &mut block[4 * lane..][..4 * len];
                let row = |i: usize| &source[offsets[i]..][..len];
                for (quad, (((a, b), c), d)) in
                    block.chunks_exact_mut(4).zip(row(0).iter().zip(row(1)).zip(row(2)).zip(row(3)))
                {
                    quad.copy_from_slice(&[*a, *b, *c, *d]);
                }
            }
        }
    }
}

/// Interleaves four rows of equal length into `out` (4 bytes per column), 16 columns at a time
/// in vector registers, then 8, 4 and one.
#[inline(always)]
pub(super) fn interleave_rows(out: &mut [u8], rows: [&[u8]; 4]) {
    let len = rows[0].len();
    let mut done = 0;
    for step in [16, 8, 4] {
        while len - done >= step {
            let row = |i: usize| &rows[i][done..][..step];
            let block = &mut out[4 * done..][..4 * step];
            match step {
                16 => interleave_fixed::<16>(block, [row(0), row(1), row(2), row(3)]),
                8 => interleave_fixed::<8>(block, [row(0), row(1), row(2), row(3)]),
                _ => interleave_fixed::<4>(block, [row(0), row(1), row(2), row(3)]),
            }
            done += step;
        }
    }
    let tail = |i: usize| Some(&rows[i][done..]);
    interleave_k4(&mut out[4 * done..4 * len], [tail(0), tail(1), tail(2), tail(3)]);
}

#[inline(always)]
fn interleave_groups_fixed<const N: usize>(
    panel: &mut [u8],
    r: usize,
    lane: usize,
    source: &[u8],
    groups: &[[usize; 4]],
) {
    for (block, offsets) in panel.chunks_exact_mut(4 * r).zip(groups) {
        let row = |i: usize| &source[offsets[i]..][..N];
        interleave_fixed::<N>(&mut block[4 * lane..][..4 * N], [row(0), row(1), row(2), row(3)]);
    }
}

/// Four rows of `N` (16, 8 or 4) bytes interleaved in vector registers. LLVM does not vectorise
/// the scalar loop (8 ns against 1.4 ns per 64 bytes, measured), so this uses the byte unpacks of
/// SSE2 (baseline x86-64) and the interleaving store of NEON (baseline aarch64).
#[inline(always)]
fn interleave_fixed<const N: usize>(block: &mut [u8], [a, b, c, d]: [&[u8]; 4]) {
    const { assert!(N == 16 || N == 8 || N == 4) };
    // Bounds are checked here; the loads and stores below stay inside these slices.
    let (block, a, b, c, d) = (&mut block[..4 * N], &a[..N], &b[..N], &c[..N], &d[..N]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; every load reads N bytes of a row and every store writes
    // inside `block` (4 N bytes), as sliced above.
    unsafe {
        use std::arch::x86_64::*;
        let out = block.as_mut_ptr().cast::<__m128i>();
        let load = |row: &[u8]| match N {
            16 => _mm_loadu_si128(row.as_ptr().cast()),
            8 => _mm_loadl_epi64(row.as_ptr().cast()),
            _ => _mm_cvtsi32_si128(row.as_ptr().cast::<i32>().read_unaligned()),
        };
        let (a, b, c, d) = (load(a), load(b), load(c), load(d));
        let (ab, cd) = (_mm_unpacklo_epi8(a, b), _mm_unpacklo_epi8(c, d));
        _mm_storeu_si128(out, _mm_unpacklo_epi16(ab, cd));
        if N >= 8 {
            _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab, cd));
        }
        if N == 16 {
            let (ab, cd) = (_mm_unpackhi_epi8(a, b), _mm_unpackhi_epi8(c, d));
            _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(ab, cd));
            _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(ab, cd));
        }
    }
    #[cfg(target_arch = "aarch64")]
    if N >= 8 {
        // SAFETY: NEON is part of aarch64; the loads read N bytes of each row and the
        // interleaving store writes 4 N bytes, inside the slices above.
        unsafe {
            use std::arch::aarch64::*;
            let out = block.as_mut_ptr();
            if N == 16 {
                let rows = uint8x16x4_t(
                    vld1q_u8(a.as_ptr()),
                    vld1q_u8(b.as_ptr()),
                    vld1q_u8(c.as_ptr()),
                    vld1q_u8(d.as_ptr()),
                );
                vst4q_u8(out, rows);
            } else {
                let rows =
                    uint8x8x4_t(vld1_u8(a.as_ptr()), vld1_u8(b.as_ptr()), vld1_u8(c.as_ptr()), vld1_u8(d.as_ptr()));
                vst4_u8(out, rows);
            }
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (quad, (((a, b), c), d)) in block.chunks_exact_mut(4).zip(a.iter().zip(b).zip(c).zip(d)) {
        quad.copy_from_slice(&[*a, *b, *c, *d]);
    }
}

/// What an `OptMatMulPack` of 8-bit activations reads, where its MN axis is the input's
/// innermost (each K row a contiguous run of MN values): shared by [`PackK4`] and the AMX packer.
pub(super) struct ActivationLayout<'a> {
    pub k: usize,
    pub mn: usize,
    /// Input distance between consecutive K rows.
    pub k_stride: usize,
    /// Offset in the input of each matrix of the batch, row-major over the other axes, as tract's
    /// op and `PackedMatrixStorage` order them.
    pub matrix_offsets: Vec<usize>,
    /// The format tract packs into (its mode picker's choice for this MN).
    pub packer: &'a dyn MMMInputFormat,
}

impl<'a> ActivationLayout<'a> {
    pub fn of(op: &OptMatMulPack, input: &TypedFact, output: &'a TypedFact) -> Option<Self> {
        if !(input.datum_type == i8::datum_type() || input.datum_type == u8::datum_type()) {
            return None;
        }
        let shape = input.shape.as_concrete()?;
        let mapping = op.axes_mapping(&[input], &[output]).ok()?;
        let k_axis = *mapping.axis('K').ok()?.inputs[0].first()?;
        let mn_axis = *mapping.axis('M').ok()?.inputs[0].first()?;
        let (k, mn) = (shape[k_axis], shape[mn_axis]);
        let mn_innermost = shape[mn_axis + 1..].iter().all(|&d| d == 1);
        if k == 0 || mn == 0 || !mn_innermost {
            return None;
        }
        let dynamic = output.exotic_fact.as_ref()?.downcast_ref::<DynPackedExoticFact>()?;
        // tract's mode picker: one packer, or (vector, matrix) chosen by MN.
        let packer = match dynamic.packers.as_slice() {
            [single] => single,
            [vector, matrix] => {
                if mn > 1 {
                    matrix
                } else {
                    vector
                }
            }
            _ => return None,
        };
        let strides: Vec<usize> = (0..shape.len()).map(|axis| shape[axis + 1..].iter().product()).collect();
        let mut matrix_offsets = vec![0];
        for axis in (0..shape.len()).filter(|&axis| axis != k_axis && axis != mn_axis) {
            let stride = strides[axis];
            matrix_offsets =
                matrix_offsets.iter().flat_map(|&offset| (0..shape[axis]).map(move |i| offset + i * stride)).collect();
        }
        let batch: usize = output.shape.as_concrete()?.iter().product();
        (batch == matrix_offsets.len()).then_some(ActivationLayout {
            k,
            mn,
            k_stride: strides[k_axis],
            matrix_offsets,
            packer: &**packer,
        })
    }
}

/// Replacement for tract's `OptMatMulPack` of 8-bit matrices whose MN axis is contiguous,
/// packed as `PackedI8K4`. tract plans a channels-first 1x1 convolution as one matmul per image
/// row (K = channels, MN = the row's positions), so the input holds a batch of matrices: one
/// per index of the other axes, in row-major order, as tract's op makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackK4 {
    format: PackedI8K4,
    k: usize,
    mn: usize,
    /// Input offsets of the four K rows of each full group, and of the rows of the last partial one.
    groups: Vec<[usize; 4]>,
    tail: Vec<usize>,
    /// Offset in the input of each matrix of the batch.
    matrix_offsets: Vec<usize>,
    output: TypedFact,
}

impl PackK4 {
    /// The replacement for `op` reading `input`, when it covers the case; `None` leaves tract's op.
    pub fn replacing(op: &OptMatMulPack, input: &TypedFact, output: &TypedFact) -> Option<Self> {
        let layout = ActivationLayout::of(op, input, output)?;
        let format = layout.packer.downcast_ref::<PackedI8K4>()?.clone();
        let ActivationLayout { k, mn, k_stride, matrix_offsets, .. } = layout;
        Some(Self::strided(format, k, mn, k_stride, matrix_offsets, output.clone()))
    }

    /// Packs the `k` x `mn` matrices at `matrix_offsets` of the input, whose K rows are `k_stride`
    /// apart and whose MN axis is contiguous, into `format`; `output` is the packed fact.
    pub(super) fn strided(
        format: PackedI8K4,
        k: usize,
        mn: usize,
        k_stride: usize,
        matrix_offsets: Vec<usize>,
        output: TypedFact,
    ) -> Self {
        let rows: Vec<usize> = (0..k).map(|row| row * k_stride).collect();
        let (groups, tail) = groups_of_four(&rows);
        PackK4 { format, k, mn, groups, tail, matrix_offsets, output }
    }

    /// Packs one `k` x `mn` matrix whose K rows are consecutive runs of `mn` values.
    #[cfg(test)]
    pub(super) fn of_rows(format: PackedI8K4, k: usize, mn: usize, output: TypedFact) -> Self {
        let rows: Vec<usize> = (0..k).map(|row| row * mn).collect();
        let (groups, tail) = groups_of_four(&rows);
        PackK4 { format, k, mn, groups, tail, matrix_offsets: vec![0], output }
    }

    /// The panel format, when this packs one `k` x `mn` matrix whose K rows are its input's
    /// consecutive runs of `mn` values, in whole groups of four: the bytes a `[1, k, mn]`
    /// activation holds, which its producer can then write as panels itself.
    pub(super) fn packs_rows(&self, k: usize, mn: usize) -> Option<&PackedI8K4> {
        let consecutive = self.groups.iter().enumerate().all(|(g, rows)| (0..4).all(|i| rows[i] == (4 * g + i) * mn));
        (self.k == k && self.mn == mn && self.matrix_offsets == [0] && self.tail.is_empty() && consecutive)
            .then_some(&self.format)
    }

    /// The packed output tensor of one matrix, its panels written by `fill`.
    ///
    /// # Safety
    /// As [`packed_matrix`]: `fill` must write every byte of the slice it gets.
    pub(super) unsafe fn packed_tensor(&self, fill: impl FnOnce(&mut [u8])) -> TractResult<Tensor> {
        let datum_type = self.output.datum_type;
        // SAFETY: the caller's `fill` writes every byte.
        let value = unsafe { packed_matrix(&self.format, datum_type, self.k, self.mn, fill)? };
        let shape: TVec<usize> = self.output.shape.as_concrete().context("PackK4 output shape")?.into();
        Ok(PackedMatrixStorage::new_batched(&shape, tvec![value]).into_tensor(datum_type))
    }

    pub(super) fn format(&self) -> &PackedI8K4 {
        &self.format
    }

    pub(super) fn output_fact(&self) -> &TypedFact {
        &self.output
    }

    /// Packs the `k` x `mn` matrix of `input` at `offset` into `packed` (every byte written).
    #[inline(always)]
    fn pack(&self, input: &[u8], offset: usize, packed: &mut [u8]) {
        let r = self.format.r;
        let panel_len = self.format.single_panel_len(self.k);
        for (panel_index, panel) in packed.chunks_exact_mut(panel_len).enumerate() {
            let source = &input[offset + panel_index * r..];
            let columns = r.min(self.mn - panel_index * r);
            interleave_groups(panel, r, 0, columns, source, &self.groups);
            if !self.tail.is_empty() {
                let block = &mut panel[self.groups.len() * 4 * r..][..4 * columns];
                let row = |lane: usize| self.tail.get(lane).map(|&k| &source[k..][..columns]);
                interleave_k4(block, [row(0), row(1), row(2), row(3)]);
            }
            if columns < r {
                // The kernel also reads the last panel's spare columns.
                for block in panel.chunks_exact_mut(4 * r) {
                    block[4 * columns..].fill(0);
                }
            }
        }
    }
}

/// Splits row offsets into full groups of four and the rest.
pub(super) fn groups_of_four(rows: &[usize]) -> (Vec<[usize; 4]>, Vec<usize>) {
    let (groups, tail) = rows.as_chunks::<4>();
    (groups.to_vec(), tail.to_vec())
}

impl Op for PackK4 {
    fn name(&self) -> StaticName {
        "PackK4".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PackK4 {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("PackK4 takes an input")?;
        let datum_type = self.output.datum_type;
        ensure!(input.datum_type() == datum_type, "PackK4 input is {:?}", input.datum_type());
        let bytes = input.as_bytes();
        let expected = self.k * self.mn * self.matrix_offsets.len();
        ensure!(bytes.len() == expected, "PackK4 input has shape {:?}", input.shape());
        let values = self
            .matrix_offsets
            .iter()
            .map(|&offset| {
                let fill = |packed: &mut [u8]| crate::simd::with_avx2!(self.pack(bytes, offset, packed));
                // SAFETY: `pack` writes every byte of every panel (K padding rows and spare
                // columns as 0).
                unsafe { packed_matrix(&self.format, datum_type, self.k, self.mn, fill) }
            })
            .collect::<TractResult<TVec<_>>>()?;
        let shape: TVec<usize> = self.output.shape.as_concrete().context("PackK4 output shape")?.into();
        let packed = PackedMatrixStorage::new_batched(&shape, values).into_tensor(datum_type);
        Ok(tvec!(packed.into_tvalue()))
    }
}

impl TypedOp for PackK4 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.clone()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's packer on each image row of a [1, k, rows, mn] input (a 1x1 convolution's batch).
    fn tract_pack(k: usize, rows: usize, mn: usize, r: usize, values: &[i8]) -> Vec<Vec<u8>> {
        let tensor = Tensor::from_shape(&[1, k, rows, mn], values).expect("input");
        (0..rows)
            .map(|row| {
                let slice = tensor.slice(2, row, row + 1).expect("row");
                let packed = PackedI8K4::new(r).pack_view(&slice.view(), 1, 3).expect("tract pack");
                packed.downcast_ref::<EagerPackedInput>().expect("eager").packed.as_bytes().to_vec()
            })
            .collect()
    }

    fn our_pack(k: usize, rows: usize, mn: usize, r: usize, values: &[i8]) -> Vec<Vec<u8>> {
        let k_rows: Vec<usize> = (0..k).map(|row| row * rows * mn).collect();
        let (groups, tail) = groups_of_four(&k_rows);
        let op = PackK4 {
            format: PackedI8K4::new(r),
            k,
            mn,
            groups,
            tail,
            matrix_offsets: (0..rows).map(|row| row * mn).collect(),
            output: i8::fact([1, rows]),
        };
        let input = Tensor::from_shape(&[1, k, rows, mn], values).expect("input");
        let output = op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()]).expect("eval").remove(0);
        let storage = output.try_storage_as::<PackedMatrixStorage>().expect("packed storage");
        (0..rows)
            .map(|row| {
                let value = storage.value_at_flat(row).downcast_ref::<EagerPackedInput>().expect("eager");
                assert_eq!((value.mn, value.panel_bytes), (mn, PackedI8K4::new(r).single_panel_len(k)));
                value.packed.as_bytes().to_vec()
            })
            .collect()
    }

    #[test]
    fn same_bytes_as_tracts_packer() {
        // DenseNet's row widths (32, 16, 8, 4) and odd ones, full and partial panels, K a
        // multiple of 4 and not, one matrix and a batch of image rows.
        let cases = [(64, 2, 32, 16), (130, 3, 16, 16), (36, 2, 8, 16), (20, 2, 4, 16), (7, 1, 40, 16)];
        let more = [(5, 2, 20, 8), (12, 1, 3, 8), (3, 1, 1, 16), (9, 2, 33, 4)];
        for (seed, (k, rows, mn, r)) in cases.into_iter().chain(more).enumerate() {
            let values = random_bytes(k * rows * mn, seed as u64);
            assert_eq!(
                our_pack(k, rows, mn, r, &values),
                tract_pack(k, rows, mn, r, &values),
                "k {k} rows {rows} mn {mn} r {r}"
            );
        }
    }

    #[test]
    fn missing_rows_are_zero() {
        let (a, b) = ([1u8, 2], [3u8, 4]);
        let mut block = [9u8; 8];
        interleave_k4(&mut block, [Some(&a), Some(&b), None, None]);
        assert_eq!(block, [1, 3, 0, 0, 2, 4, 0, 0]);
    }
}
