import pytest
import torch
import torch.nn.functional as F

from t2diff.model.unet import Conv3Block, UNet1D, scaled_channels


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("L", [2, 7, 56])
def test_conv3_equals_reflect_padded_conv1d(gather, L):
    torch.manual_seed(0)
    blk = Conv3Block(5, 6)
    x = torch.randn(3, L, 5)
    u = blk.unfold(x, gather=gather)
    w = blk.proj.weight.view(6, 3, 5).permute(0, 2, 1)  # (cout, cin, tap)
    ref = F.conv1d(F.pad(x.transpose(1, 2), (1, 1), mode="reflect"), w, blk.proj.bias).transpose(1, 2)
    torch.testing.assert_close(blk.proj(u), ref, rtol=1e-5, atol=1e-5)


def test_unet_shapes_channels_and_length_check():
    assert scaled_channels((4, 8, 16, 32), 8) == (8, 16, 32, 64)
    net = UNet1D(edim=8)
    assert net.padded_length(50) == 56 and net.padded_length(3) == 16
    z = torch.randn(2, 56, 8)
    out = net(z, torch.randn(2, 56, 8), torch.tensor([0, 49]))
    assert out.shape == (2, 56, 8)
    out_shared = net(z, torch.zeros(2, 56, 8), torch.tensor(3))  # one step for the whole batch
    assert out_shared.shape == (2, 56, 8)
    with pytest.raises(ValueError, match="multiple"):
        net(torch.randn(2, 50, 8), torch.randn(2, 50, 8), torch.tensor(0))


@pytest.mark.parametrize("channels", [(4, 8, 16, 32), (8, 16)])  # output = the last LayerNorm / a Linear
def test_zero_out_starts_the_prediction_at_zero_and_still_learns(channels):
    torch.manual_seed(0)
    z, x, t = torch.randn(3, 56, 4) * 0.05, torch.randn(3, 56, 4) * 0.05, torch.tensor([0, 10, 49])
    # the official net: a unit-scale output per position whatever the (small) input, as its last op is a LayerNorm
    official = UNet1D(edim=4, channels=channels)(z, x, t)
    assert official.norm(dim=-1).mean() > 0.5
    net = UNet1D(edim=4, channels=channels, zero_out=True)
    assert torch.count_nonzero(net(z, x, t)) == 0  # ẑ0 = 0: x̂_{n+1} = x_n at initialisation
    target = torch.randn(3, 56, 4) * 0.05
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(20):  # the zeroed layer gets a gradient, then the layers before it
        loss = (net(z, x, t) - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.count_nonzero(net(z, x, t)) > 0 and (net(z, x, t) - target).pow(2).sum() < target.pow(2).sum()
