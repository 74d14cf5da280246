"""The evaluation network of DARTS' ImageNet (mobile) setting: a 3-conv stride-8 stem,
then cells at 28x28 with two reductions, an auxiliary head after the second reduction."""

from __future__ import annotations

from torch import nn

from pipeline.cifar_net import EvalCell


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier on the 7x7 feature map after the second reduction."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class NetworkImageNet(nn.Module):
    def __init__(self, cells: dict, channels: int, num_classes: int, layers: int, auxiliary: bool):
        super().__init__()
        self.drop_path_prob = 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        c_pp, c_p, c_curr = channels, channels, channels
        self.cells = nn.ModuleList()
        reduction_prev = True  # stem1 halves the resolution after stem0
        self.auxiliary_index = 2 * layers // 3
        aux_channels = None
        for index in range(layers):
            reduction = index in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            spec = cells["reduce" if reduction else "normal"]
            cell = EvalCell(spec["edges"], spec["concat"], c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if index == self.auxiliary_index:
                aux_channels = c_p
        self.auxiliary_head = AuxiliaryHeadImageNet(aux_channels, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        logits_aux = None
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        for index, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if index == self.auxiliary_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux
