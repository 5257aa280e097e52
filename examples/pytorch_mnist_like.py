"""Data-parallel training of a small CNN with hora.torch, on synthetic MNIST-like data.

    horovodrun -np 2 .venv/bin/python examples/pytorch_mnist_like.py

Written as a Horovod script would be: only the import line differs. Each rank trains on its
own shard of a synthetic 10-class dataset (class templates plus noise, so there is something
to learn and nothing to download); gradients are averaged by DistributedOptimizer, the
initial model and optimizer state come from rank 0, the learning rate is scaled by the
number of ranks, and the reported metrics are averaged over ranks.
"""

import argparse
import time

import torch
import torch.nn.functional as F

import hora.torch as hvd


class Net(torch.nn.Module):
    """Two conv layers and two dense layers, as in the classic MNIST example."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = torch.nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = torch.nn.Linear(320, 50)
        self.fc2 = torch.nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def synthetic_dataset(n, seed):
    """``n`` 28x28 images: a fixed random template per class, shifted and noised."""
    g = torch.Generator().manual_seed(1234)  # same templates on every rank
    templates = torch.randn(10, 1, 28, 28, generator=g)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = templates[labels] + 1.5 * torch.randn(n, 1, 28, 28, generator=g)
    return images, labels


def metric_average(value, name):
    return hvd.allreduce(torch.tensor(float(value)), name=name).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2048, help="training samples per rank")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--fp16-allreduce", action="store_true")
    args = parser.parse_args()

    hvd.init()
    torch.manual_seed(42 + hvd.rank())  # different on purpose: broadcast makes them equal
    torch.set_num_threads(1)

    train_x, train_y = synthetic_dataset(args.samples, seed=hvd.rank())
    test_x, test_y = synthetic_dataset(512, seed=10_000 + hvd.rank())

    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr * hvd.size(), momentum=0.5)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                         compression=compression)

    for epoch in range(1, args.epochs + 1):
        model.train()
        start = time.perf_counter()
        total, batches = 0.0, 0
        perm = torch.randperm(args.samples)
        for i in range(0, args.samples, args.batch_size):
            idx = perm[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        train_loss = metric_average(total / batches, "train_loss")
        model.eval()
        with torch.no_grad():
            out = model(test_x)
            test_loss = metric_average(F.cross_entropy(out, test_y).item(), "test_loss")
            accuracy = metric_average((out.argmax(1) == test_y).float().mean().item(), "accuracy")
        if hvd.rank() == 0:
            print(f"epoch {epoch}: train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
                  f"accuracy {100 * accuracy:.1f}%  ({time.perf_counter() - start:.1f} s, {hvd.size()} ranks)",
                  flush=True)
    hvd.shutdown()


if __name__ == "__main__":
    main()
