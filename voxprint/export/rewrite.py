"""Export-time rewrites: an inference copy of an encoder that computes the same function with operations
every exporter can express.

Two layers of the registry have no ONNX counterpart, and both have an exact equivalent that does:

- :class:`~voxprint.models.sinc_conv.SincConv` computes its band-pass filters from their cut-offs at
  every call (``torch.sinc`` has no ONNX operator) and, on CPU, applies them by FFT with a transform
  size computed in Python from the input length (a trace would freeze it). At inference the filters
  are constants, so the copy holds them in a plain :class:`torch.nn.Conv1d` (:func:`frozen_sinc_conv`).
- A projected LSTM (``proj_size > 0``, the GE2E d-vector) is not an ONNX ``LSTM``. Because
  ``h_t = W_hr m_t`` with ``m_t = o_t * tanh(c_t)``, the recurrence ``W_hh h_{t-1}`` equals
  ``(W_hh W_hr) m_{t-1}``: each layer is a standard LSTM over ``m`` with recurrent weights
  ``W_hh W_hr``, followed by the projection ``W_hr`` (:class:`UnprojectedLSTM`). The products are formed
  in float64, so the copy differs from the original by float32 rounding only.

One rewrite is for speed only: ECAPA-TDNN's frame layers compute dilated convolutions as one matrix
product over shifted copies of the input (PyTorch's CPU kernel for dilated convolutions is slow);
onnxruntime's ``Conv`` handles dilation natively, and the stacked copies (pad, slices, concatenation)
would stay float32 operations between the int8 ones of a quantized graph. The copy computes those
layers with the plain convolution the layer holds (:func:`plain_frame_layer`; the two are equal, see
:func:`~voxprint.models.ecapa_tdnn.dilated_conv1d`).

Another is for speed too: Res2Net's channel groups (``x.chunk(scale, dim=1)``) trace into a ``Slice`` per
group whose bounds are computed from the input's shape at run time (``Shape``, ``Gather``, ``Add``,
``Div``, ``Mul``: about 18 nodes per block); the channel count is a constant of the trained model, so
the copy cuts the groups with one ``Split`` of constant sizes (:class:`StaticSplitRes2Conv`: the same
tensors, 54 fewer nodes in ECAPA-TDNN's graph, about 2 % faster in float32 and no slower in int8).

Measured and not kept (one thread, the bundled ECAPA-TDNN): folding each batch norm that follows a ReLU
into the convolution before it (``a relu(z) + b = relu(a z) + b`` when every scale ``a`` is positive,
which holds for all 28 such layers here) leaves the shift ``b`` as an ``Add``; in float32 that is one pass
like the batch norm's, in int8 it let onnxruntime's layout transformer remove the transposes around the
quantized convolutions but made the float operations between them slower, for no net gain. The shift
cannot fold into the next convolution either where that one is zero-padded (the padded frames would
see ``b``), which covers every consumer of those layers except the 1x1 convolution after Res2Net's
concatenation. Pooling statistics from ``ReduceMean`` instead of products with uniform weights: 2 %
faster in float32, 3 % slower in int8 (onnxruntime reduced the channels-last tensor). Folding the
pooling and embedding batch norms into the embedding layer: two operations on one vector per window,
no measurable gain, and the int8 embedding layer would then see the unnormalised statistics.

The original model is never changed: :func:`exportable_encoder` works on a deep copy.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from voxprint.models.ecapa_tdnn import ConvReluBN, Res2Conv, res2_cascade
from voxprint.models.sinc_conv import SincConv

__all__ = ["StaticSplitRes2Conv", "UnprojectedLSTM", "exportable_encoder", "frozen_sinc_conv", "plain_frame_layer"]


def plain_frame_layer(layer: ConvReluBN) -> nn.Sequential:
    """ECAPA-TDNN's convolution -> ReLU -> batch norm frame layer with its plain (dilated) convolution.

    Args:
        layer: the trained frame layer.

    Returns:
        ``nn.Sequential(conv, relu, bn)`` sharing the layer's modules.

    Example:
        >>> layer = ConvReluBN(4, 6, kernel_size=3, dilation=3).eval()
        >>> x = torch.randn(2, 4, 20)
        >>> bool(torch.allclose(plain_frame_layer(layer)(x), layer(x), atol=1e-5))
        True
    """
    return nn.Sequential(layer.conv, nn.ReLU(), layer.bn)


class StaticSplitRes2Conv(nn.Module):
    """A :class:`~voxprint.models.ecapa_tdnn.Res2Conv` whose channel groups are cut by constant sizes.

    ``x.chunk(scale, dim=1)`` and ``x.split(width, dim=1)`` give the same tensors when the channel count
    is ``scale * width`` (Res2Conv requires it); the trace of the first computes the slice bounds from the
    input's shape at run time, the second exports as one ``Split`` with constant sizes. The convolutions
    and the forward computation are the original's.

    Args:
        res2: the trained Res2Net convolution; its ``convs`` are shared.

    Example:
        >>> res2 = Res2Conv(16, kernel_size=3, dilation=2, scale=4).eval()
        >>> x = torch.randn(2, 16, 30)
        >>> bool(torch.equal(StaticSplitRes2Conv(res2)(x), res2(x)))
        True
    """

    def __init__(self, res2: Res2Conv):
        super().__init__()
        self.scale = res2.scale
        self.convs = res2.convs
        first = res2.convs[0]
        self.width = int((first.conv if isinstance(first, ConvReluBN) else first[0]).in_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return res2_cascade(self.convs, x.split(self.width, dim=1), mask)


def frozen_sinc_conv(sinc: SincConv) -> nn.Conv1d:
    """A :class:`torch.nn.Conv1d` holding a sinc-conv's current filters (its direct method, same output).

    Args:
        sinc: the trained sinc-conv.

    Returns:
        A bias-free convolution with the same stride and padding.

    Example:
        >>> sinc = SincConv(4, kernel_size=65, padding=32)
        >>> x = torch.randn(1, 1, 800)
        >>> bool(torch.allclose(frozen_sinc_conv(sinc)(x), sinc(x), atol=1e-4))
        True
    """
    conv = nn.Conv1d(1, sinc.out_channels, sinc.kernel_size, stride=sinc.stride, padding=sinc.padding, bias=False)
    with torch.no_grad():
        conv.weight.copy_(sinc.filters().unsqueeze(1))
    return conv


class UnprojectedLSTM(nn.Module):
    """A projected :class:`torch.nn.LSTM` rewritten as standard LSTM layers, each followed by its projection.

    Same call and outputs as the original (``batch_first`` or not, one or two directions):
    ``(outputs, (h_n, c_n))``.

    Args:
        lstm: a trained LSTM with ``proj_size > 0``.

    Raises:
        ValueError: the LSTM has no projection.

    Example:
        >>> lstm = nn.LSTM(6, 8, num_layers=2, proj_size=3, batch_first=True).eval()
        >>> x = torch.randn(2, 11, 6)
        >>> (out, (h, c)), (ref, (h_ref, c_ref)) = UnprojectedLSTM(lstm)(x), lstm(x)
        >>> out.shape, bool(torch.allclose(out, ref, atol=1e-5)), bool(torch.allclose(c, c_ref, atol=1e-5))
        (torch.Size([2, 11, 3]), True, True)
    """

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        if lstm.proj_size <= 0:
            raise ValueError("UnprojectedLSTM rewrites LSTMs with projections (proj_size > 0) only")
        self.batch_first = lstm.batch_first
        self.directions = 2 if lstm.bidirectional else 1
        hidden = lstm.hidden_size
        self.layers = nn.ModuleList()
        self.projections = nn.ModuleList()
        for layer in range(lstm.num_layers):
            input_size = lstm.input_size if layer == 0 else lstm.proj_size * self.directions
            plain = nn.LSTM(input_size, hidden, batch_first=lstm.batch_first, bidirectional=lstm.bidirectional,
                            bias=lstm.bias)
            for direction in range(self.directions):
                reverse = "_reverse" if direction else ""
                source, target = f"_l{layer}{reverse}", f"_l0{reverse}"  # each plain LSTM has one layer
                w_hr = getattr(lstm, f"weight_hr{source}").detach()
                merged = getattr(lstm, f"weight_hh{source}").detach().double() @ w_hr.double()
                names = ["weight_ih"] + (["bias_ih", "bias_hh"] if lstm.bias else [])
                with torch.no_grad():
                    for name in names:
                        getattr(plain, name + target).copy_(getattr(lstm, name + source))
                    getattr(plain, f"weight_hh{target}").copy_(merged.float())
                projection = nn.Linear(hidden, lstm.proj_size, bias=False)
                with torch.no_grad():
                    projection.weight.copy_(w_hr)
                self.projections.append(projection)
            self.layers.append(plain)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the layers over ``x``; returns ``(outputs, (h_n, c_n))`` as :class:`torch.nn.LSTM` does."""
        final_h, final_c = [], []
        for index, layer in enumerate(self.layers):
            states, (_, c_n) = layer(x)
            projections = self.projections[index * self.directions:(index + 1) * self.directions]
            halves = states.chunk(self.directions, dim=-1)
            x = torch.cat([proj(half) for proj, half in zip(projections, halves)], dim=-1)
            last = x[:, -1] if self.batch_first else x[-1]
            first = x[:, 0] if self.batch_first else x[0]
            # h_n holds each direction's final state: the last step forwards, the first step backwards.
            final_h.extend([last.chunk(self.directions, dim=-1)[0]]
                           + ([first.chunk(2, dim=-1)[1]] if self.directions == 2 else []))
            final_c.append(c_n)
        return x, (torch.stack(final_h), torch.cat(final_c))


def exportable_encoder(encoder: nn.Module) -> nn.Module:
    """A deep copy of ``encoder`` in eval mode with every layer that cannot be exported rewritten (see the module).

    Args:
        encoder: a registered encoder (``model.encoder``); it is not changed.

    Returns:
        The rewritten copy (the same object type; only submodules are replaced).

    Example:
        >>> from voxprint.models.lstm_dvector import LSTMDVector
        >>> model = LSTMDVector(input_dim=8, hidden_size=16, proj_size=4, embedding_dim=5).eval()
        >>> copy = exportable_encoder(model)
        >>> type(copy.lstm).__name__, type(model.lstm).__name__
        ('UnprojectedLSTM', 'LSTM')
        >>> x = torch.randn(2, 30, 8)
        >>> bool(torch.allclose(copy(x), model(x), atol=1e-5))
        True
    """
    copied = copy.deepcopy(encoder).eval()
    replacements: list[tuple[str, nn.Module]] = []
    for name, module in copied.named_modules():
        if isinstance(module, SincConv):
            replacements.append((name, frozen_sinc_conv(module)))
        elif isinstance(module, nn.LSTM) and module.proj_size > 0:
            replacements.append((name, UnprojectedLSTM(module)))
        elif isinstance(module, ConvReluBN) and module.conv.dilation[0] > 1:
            replacements.append((name, plain_frame_layer(module)))
        elif isinstance(module, Res2Conv) and module.scale > 1:
            # Listed before its convolutions: they keep their names under the replacement.
            replacements.append((name, StaticSplitRes2Conv(module)))
    for name, module in replacements:
        parent_name, _, attribute = name.rpartition(".")
        parent = copied.get_submodule(parent_name) if parent_name else copied
        setattr(parent, attribute, module.eval())
    return copied
