"""ProxylessNAS spaces: 21 searchable layers of a MobileNetV2 backbone, each one of
MBConv {expand 3, 6} x {kernel 3, 5, 7} or skip where the layer's shapes allow.

``proxyless`` has the ProxylessNAS-GPU channel sizes (Cai et al., 2019);
``proxyless_mobile`` the MobileNetV2 / ProxylessNAS-Mobile ones, whose layers are the keys
of the vendored Pixel-1 latency table. ``channels`` scales every width relative to the
stem width of the space (40 or 32 is full size); ``layers`` must be 21.

Genotype cells: ``{"layers": {"edges": [{"node": i + 1, "input": i, "op": ...}, ...]}}``,
one entry per searchable layer (layer i + 1 reads layer i). Text form: the 21 op names
separated by spaces.

Settings: 'imagenet' (stride-2 stem, overall stride 32, 224x224 input) or 'cifar' (stride-1
stem and first stage, overall stride 8, 32x32 input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.spaces import SPACES
from pipeline.spaces.base import Space

if TYPE_CHECKING:
    import torch

    from pipeline.nets.proxyless import LayerShape, ProxylessSuperNet

SEARCHABLE_LAYERS = 21
# The op names pipeline.nets.proxyless builds (mbconv_name, SKIP; a test checks they agree).
MBCONV_OPS = tuple(f"mbconv{e}_k{k}" for e in (3, 6) for k in (3, 5, 7))
SKIP = "skip_connect"
SETTINGS = ("cifar", "imagenet")

# (out channels, layers, stride of the first layer) per stage, after the stem and a fixed MBConv1.
GPU = {"stem": 40, "first": 24, "mix": 1728, "stages": [(32, 4, 2), (56, 4, 2), (112, 4, 2), (128, 4, 1), (256, 4, 2), (432, 1, 1)]}
MOBILE = {"stem": 32, "first": 16, "mix": 1280, "stages": [(24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)]}


def _scaled(width: int, scale: float) -> int:
    return width if scale == 1 else max(4, int(round(width * scale / 4)) * 4)


class ProxylessSpace(Space):
    cell_types = ("layers",)
    inputs_per_node = None  # a chain: no topology to select

    def __init__(self, name: str, widths: dict):
        self.name = name
        self.widths = widths
        self.primitives = (*MBCONV_OPS, SKIP)
        # Skip is a choice only where the full-size network's shapes allow it.
        self.skippable = [dims[3] for dims in self._layer_dims(widths["stem"], "imagenet")]

    # -- topology
    def edges(self) -> list[tuple[int, int]]:
        return [(i + 1, i) for i in range(SEARCHABLE_LAYERS)]

    def candidates(self, cell_type: str) -> list[list[str]]:
        return [list(self.primitives) if skip else list(MBCONV_OPS) for skip in self.skippable]

    def arch_shape(self) -> tuple[int, int]:
        return SEARCHABLE_LAYERS, len(self.primitives)

    def arch_mask(self) -> dict[str, torch.Tensor]:
        """True where a column is one of the layer's candidates (skip only where allowed)."""
        import torch

        mask = torch.ones(self.arch_shape(), dtype=torch.bool)
        mask[:, -1] = torch.tensor(self.skippable)
        return {"layers": mask}

    def layer_shapes(self, channels: int, setting: str) -> list[LayerShape]:
        from pipeline.nets.proxyless import LayerShape

        return [LayerShape(c_in, c_out, stride, residual=residual) for c_in, c_out, stride, residual in self._layer_dims(channels, setting)]

    def _layer_dims(self, channels: int, setting: str) -> list[tuple[int, int, int, bool]]:
        """(c_in, c_out, stride, identity shortcut allowed) of every searchable layer."""
        if setting not in SETTINGS:
            raise ValueError(f"unknown network setting {setting!r}; known: {', '.join(SETTINGS)}")
        scale = channels / self.widths["stem"]
        shapes = []
        c_in = _scaled(self.widths["first"], scale)
        for stage, (c_out, repeats, stride) in enumerate(self.widths["stages"]):
            c_out = _scaled(c_out, scale)
            if setting == "cifar" and stage == 0:
                stride = 1  # keep 32x32 inputs from shrinking to 1x1
            for repeat in range(repeats):
                s = stride if repeat == 0 else 1
                shapes.append((c_in, c_out, s, s == 1 and c_in == c_out))
                c_in = c_out
        return shapes

    def _widths(self, channels: int, setting: str) -> dict:
        scale = channels / self.widths["stem"]
        return {
            "stem": _scaled(self.widths["stem"], scale),
            "first": _scaled(self.widths["first"], scale),
            "mix": _scaled(self.widths["mix"], scale),
            "stem_stride": 2 if setting == "imagenet" else 1,
        }

    def _check_layers(self, layers: int) -> None:
        if layers != SEARCHABLE_LAYERS:
            raise ValueError(f"the {self.name} space has {SEARCHABLE_LAYERS} searchable layers; set layers: 21 (got {layers})")

    # -- builders
    def build_supernet(self, channels: int, layers: int, num_classes: int, setting: str = "cifar") -> ProxylessSuperNet:
        from pipeline.nets.proxyless import ProxylessSuperNet

        self._check_layers(layers)
        shapes = self.layer_shapes(channels, setting)
        return ProxylessSuperNet({"layers": self.candidates("layers")}, shapes, self._widths(channels, setting), num_classes)

    def build_network(self, cells: dict, channels: int, layers: int, num_classes: int, auxiliary: bool, setting: str = "cifar"):
        """ProxylessNAS networks have no auxiliary head; ``auxiliary`` is accepted and ignored."""
        from pipeline.nets.proxyless import ProxylessNetwork

        self._check_layers(layers)
        self.validate_genotype(cells)
        shapes = self.layer_shapes(channels, setting)
        return ProxylessNetwork(self.ops(cells), shapes, self._widths(channels, setting), num_classes)

    # -- genotypes
    @staticmethod
    def ops(cells: dict) -> list[str]:
        return [edge["op"] for edge in sorted(cells["layers"]["edges"], key=lambda e: e["node"])]

    def parse(self, weights: dict[str, torch.Tensor], exclude_ops: Sequence[str]) -> dict:
        """Argmax per layer over its candidates not in ``exclude_ops``."""
        w = weights["layers"].detach().cpu()
        edges = []
        for index, ((node, source), names) in enumerate(zip(self.edges(), self.candidates("layers"))):
            allowed = [k for k, name in enumerate(names) if name not in set(exclude_ops)]
            if not allowed:
                raise ValueError(f"exclude_ops {sorted(exclude_ops)} leaves no op on layer {node}")
            best = max(allowed, key=lambda k: w[index, k].item())
            edges.append({"node": node, "input": source, "op": names[best]})
        cells = {"layers": {"edges": edges}}
        self.validate_genotype(cells)
        return cells

    def validate_genotype(self, cells: Any) -> None:
        if not isinstance(cells, dict) or set(cells) != {"layers"}:
            raise ValueError(f"field 'cells' must have exactly the cell type ['layers'] ({self.name})")
        edges = cells["layers"].get("edges") if isinstance(cells["layers"], dict) else None
        if not isinstance(edges, list) or len(edges) != SEARCHABLE_LAYERS:
            raise ValueError(f"field 'cells.layers.edges' must list the {SEARCHABLE_LAYERS} searchable layers")
        allowed = dict(zip(self.edges(), self.candidates("layers")))
        seen = set()
        for index, edge in enumerate(edges):
            where = f"cells.layers.edges[{index}]"
            if not isinstance(edge, dict) or set(edge) != {"node", "input", "op"}:
                raise ValueError(f"field '{where}' must be an object with node, input, op")
            key = (edge["node"], edge["input"])
            if key not in allowed or key in seen:
                raise ValueError(f"field '{where}': layer {edge['node']} must read layer {edge['node'] - 1}, once")
            if edge["op"] not in allowed[key]:
                raise ValueError(f"field '{where}': op {edge['op']!r} is not a choice of layer {edge['node']}: {allowed[key]}")
            seen.add(key)

    def to_text(self, cells: dict) -> str:
        return " ".join(self.ops(cells))

    def from_text(self, text: str) -> dict:
        names = text.replace(",", " ").split()
        if len(names) != SEARCHABLE_LAYERS:
            raise ValueError(f"expected {SEARCHABLE_LAYERS} op names ({', '.join(self.primitives)}) separated by spaces; got {len(names)}")
        cells = {"layers": {"edges": [{"node": i + 1, "input": i, "op": op} for i, op in enumerate(names)]}}
        self.validate_genotype(cells)
        return cells


SPACES.register("proxyless")(ProxylessSpace("proxyless", GPU))
SPACES.register("proxyless_mobile")(ProxylessSpace("proxyless_mobile", MOBILE))
