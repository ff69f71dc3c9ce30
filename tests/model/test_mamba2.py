"""Pure-PyTorch Mamba2: scan == step loop, chunked == whole, mamba-ssm state-dict layout."""

import pytest
import torch

from synthsleep.model import Mamba2, cuda_kernels_available, ssd_scan

TOL = 1e-4  # fp32, absolute and relative


def _layer(chunk: int = 5) -> Mamba2:
    m = Mamba2(d_model=32, d_state=8, d_conv=4, expand=2, headdim=8, chunk_size=chunk)
    with torch.no_grad():  # spread decays so some heads forget fast, some slowly
        m.A_log.copy_(torch.linspace(-2.0, 1.5, m.nheads))
        m.dt_bias.copy_(torch.linspace(-3.0, 1.0, m.nheads))
        m.conv1d.bias.normal_()
        m.D.normal_()
    return m


def _random_state(m: Mamba2, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    conv, ssm = m.allocate_state(b)
    return torch.randn_like(conv), torch.randn_like(ssm)


def test_ssd_scan_equals_naive_recurrence():
    b, L, h, p, n = 2, 11, 3, 4, 5
    x, a = torch.randn(b, L, h, p), -torch.rand(b, L, h) * 2
    bb, cc = torch.randn(b, L, n), torch.randn(b, L, n)
    h0 = torch.randn(b, h, p, n)
    y, final = ssd_scan(x, a, bb, cc, chunk=4, initial_state=h0)
    state = h0.clone()
    for t in range(L):
        state = state * a[:, t].exp()[:, :, None, None] + x[:, t, :, :, None] * bb[:, t, None, None, :]
        yt = (state * cc[:, t, None, None, :]).sum(-1)
        torch.testing.assert_close(y[:, t], yt, atol=TOL, rtol=TOL)
    torch.testing.assert_close(final, state, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("zero_state", [True, False])
def test_scan_equals_step_loop(zero_state):
    m = _layer(chunk=5)
    u = torch.randn(3, 23, 32)  # 23: not a multiple of the chunk length
    conv0, ssm0 = m.allocate_state(3) if zero_state else _random_state(m, 3)
    with torch.no_grad():
        y, conv, ssm = m(u, conv0, ssm0)
        c, s = conv0, ssm0
        ys = []
        for t in range(u.shape[1]):
            yt, c, s = m.step(u[:, t], c, s)
            ys.append(yt)
    torch.testing.assert_close(y, torch.stack(ys, 1), atol=TOL, rtol=TOL)
    torch.testing.assert_close(conv, c, atol=TOL, rtol=TOL)
    torch.testing.assert_close(ssm, s, atol=TOL, rtol=TOL)
    assert not torch.equal(conv0, conv) and not torch.equal(ssm0, ssm)


def test_three_chunks_with_state_carried_equal_whole():
    m = _layer(chunk=4)
    u = torch.randn(2, 30, 32)
    with torch.no_grad():
        y_whole, conv_w, ssm_w = m(u)
        state = None, None
        parts = []
        for sl in (slice(0, 7), slice(7, 19), slice(19, 30)):
            y, *state = m(u[:, sl], *state)
            parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), y_whole, atol=TOL, rtol=TOL)
    torch.testing.assert_close(state[0], conv_w, atol=TOL, rtol=TOL)
    torch.testing.assert_close(state[1], ssm_w, atol=TOL, rtol=TOL)


def test_gradients_finite_through_scan_and_state():
    m = _layer(chunk=4)
    u = torch.randn(2, 13, 32, requires_grad=True)
    conv0, ssm0 = _random_state(m, 2)
    ssm0.requires_grad_(True)
    y, _, ssm = m(u, conv0, ssm0)
    (y.square().mean() + ssm.square().mean()).backward()
    grads = [u.grad, ssm0.grad] + [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert ssm0.grad.abs().sum() > 0  # truncated BPTT: gradient reaches the carried state


def test_mamba_ssm_state_dict_layout_loads_strict():
    d_model, d_state, d_conv, expand, headdim = 64, 16, 4, 2, 16
    d_inner = expand * d_model
    nheads = d_inner // headdim
    conv_dim = d_inner + 2 * d_state
    # Layout of mamba_ssm.modules.mamba2.Mamba2 (ngroups=1, rmsnorm, no bias, conv bias):
    sd = {
        "in_proj.weight": torch.randn(2 * d_inner + 2 * d_state + nheads, d_model),
        "conv1d.weight": torch.randn(conv_dim, 1, d_conv),
        "conv1d.bias": torch.randn(conv_dim),
        "dt_bias": torch.randn(nheads),
        "A_log": torch.randn(nheads),
        "D": torch.randn(nheads),
        "norm.weight": torch.randn(d_inner),
        "out_proj.weight": torch.randn(d_model, d_inner),
    }
    m = Mamba2(d_model, d_state, d_conv, expand, headdim)
    m.load_state_dict(sd, strict=True)
    assert set(m.state_dict()) == set(sd)
    for k, v in sd.items():
        assert torch.equal(m.state_dict()[k], v), k
    conv, ssm = m.allocate_state(3)
    assert conv.shape == (3, conv_dim, d_conv) and ssm.shape == (3, nheads, headdim, d_state)


def test_in_proj_order_is_z_x_b_c_dt():
    """Zeroing the dt rows of in_proj must act only through dt; z rows only through the gate."""
    m = _layer()
    u = torch.randn(1, 32)
    c, s = m.allocate_state(1)
    with torch.no_grad():
        m.in_proj.weight[-m.nheads:] = 0  # dt = softplus(dt_bias) only
        m.dt_bias.fill_(-30.0)  # dt ~ 0: no input enters the state
        _, _, s1 = m.step(u, c, s)
    assert s1.abs().max() < 1e-8
    with torch.no_grad():
        m.in_proj.weight[: m.d_inner] = 0  # z = 0 -> silu(0) = 0 -> gated output is 0
        m.dt_bias.fill_(0.0)
        y, _, s2 = m.step(u, c, s)
    assert s2.abs().max() > 1e-3 and y.abs().max() < 1e-6


@pytest.mark.skipif(not cuda_kernels_available(), reason="mamba-ssm kernels need CUDA + mamba_ssm")
def test_cuda_kernels_match_pure_pytorch():  # pragma: no cover - needs a GPU with mamba-ssm
    m = _layer(chunk=16).cuda()
    u = torch.randn(2, 50, 32, device="cuda")
    conv0, ssm0 = _random_state(m, 2)
    conv0, ssm0 = conv0.cuda(), ssm0.cuda()
    with torch.no_grad():
        y_k, _, s_k = m(u, conv0, ssm0)
        m.use_cuda_kernels = False
        y_p, _, s_p = m(u, conv0, ssm0)
    torch.testing.assert_close(y_k, y_p, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(s_k, s_p, atol=1e-3, rtol=1e-3)
