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
