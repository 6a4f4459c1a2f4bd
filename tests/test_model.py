import pytest
import torch
import torch.nn.functional as F

from bisenet_deploy.model import BiSeNet
from bisenet_deploy.model.bisenet import FeatureFusion

from .conftest import make_model


@pytest.mark.parametrize("num_classes", [1, 2, 19])
@pytest.mark.parametrize("size", [(64, 128), (96, 96), (70, 100), (33, 47)])
def test_output_size_equals_input_size_in_eval_and_train(num_classes, size):
    model = BiSeNet(num_classes=num_classes)
    x = torch.randn(2, 3, *size)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, num_classes, *size)
    model.train()
    main, aux16, aux32 = model(x)
    for t in (main, aux16, aux32):
        assert t.shape == (2, num_classes, *size)


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50", "resnet101"])
def test_deeper_backbones_build_and_run(backbone):
    model = BiSeNet(num_classes=3, backbone=backbone).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_eval_output_is_main_head_of_train_output():
    model = make_model(4)
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        eval_out = model(x)
        # BN in train mode uses batch statistics, so compare with BN kept in eval.
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        main, _, _ = model(x)
    model.eval()
    torch.testing.assert_close(main, eval_out)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        BiSeNet(num_classes=0)
    with pytest.raises(ValueError, match="backbone"):
        BiSeNet(backbone="vgg16")
    with pytest.raises(ValueError, match="variant"):
        BiSeNet(variant="v2")


def test_paper_ffm_gate_is_a_sigmoid_of_two_distinct_convs():
    torch.manual_seed(0)
    ffm = FeatureFusion(8, 4, "paper").eval()
    a, b = torch.randn(1, 5, 6, 6), torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        feature = ffm.conv_block(torch.cat([a, b], 1))
        conv_a, conv_b = ffm.attention[0], ffm.attention[2]
        assert conv_a is not conv_b
        attn = torch.sigmoid(conv_b(F.relu(conv_a(feature.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(ffm(a, b), feature + feature * attn)


def test_seed_ffm_reproduces_the_sketch_forward():
    """The seed sketch applies one conv_1x1 twice with ReLU gates and no sigmoid."""
    torch.manual_seed(0)
    ffm = FeatureFusion(8, 4, "seed").eval()
    a, b = torch.randn(1, 5, 6, 6), torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        feature = ffm.conv_block(torch.cat([a, b], 1))
        pooled = F.adaptive_avg_pool2d(feature, 1)
        attn = F.relu(ffm.conv_1x1(F.relu(ffm.conv_1x1(pooled))))
        torch.testing.assert_close(ffm(a, b), torch.add(feature, torch.mul(feature, attn)))
    assert {k.split(".")[0] for k in ffm.state_dict()} == {"conv_block", "conv_1x1"}


def test_arm_gradient_flows_through_the_main_path():
    """The sketch multiplied the gate with x.detach(): only the gate got gradients."""
    model = make_model(2)
    arm = model.attention_refinement_module_32x.train()

    def gate(t):
        return torch.sigmoid(arm.batch_norm(arm.conv_1x1(t.mean((2, 3), keepdim=True))))

    x = torch.randn(2, 512, 2, 4, requires_grad=True)
    arm(x).sum().backward()
    x_gate_only = x.detach().clone().requires_grad_()
    (x_gate_only.detach() * gate(x_gate_only)).sum().backward()
    with torch.no_grad():
        expected_main_path = gate(x).expand_as(x)
    torch.testing.assert_close(x.grad - x_gate_only.grad, expected_main_path, rtol=1e-4, atol=1e-5)


def test_training_flag_follows_train_and_eval():
    model = BiSeNet(num_classes=2)
    assert model.training
    model.eval()
    assert not model.training
    assert isinstance(model(torch.randn(1, 3, 32, 32)), torch.Tensor)
