"""FedAvg as a plain sequential PyTorch loop, no framework: the lower bound for sequential work.

Each round takes its cohort from the data file's schedule, trains every member in turn from the
global weights (the file's initial model in round 0) with :func:`local_torch.train_locally`,
averages the weights by example count, and scores the result on the central test set. Nothing
is serialized, copied to another process or logged.
"""

from __future__ import annotations

import torch
from local_torch import accuracy, mlp, one_thread, train_locally
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from workloads import Timeline, Workload, read_partition, runner_arguments, write_result


def main() -> None:
    args = runner_arguments(__doc__ or "")
    one_thread()
    workload = Workload.from_json(args.workload)
    data = read_partition(args.data)
    xs = [torch.from_numpy(x) for x in data.xs]
    ys = [torch.from_numpy(y) for y in data.ys]
    test_x, test_y = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y)

    model = mlp(test_x.shape[1], workload.hidden, data.num_classes)
    global_weights = torch.from_numpy(data.initial).clone()
    generator = torch.Generator().manual_seed(workload.seed)

    timeline = Timeline()
    timeline.start()
    for cohort in data.cohorts[: workload.rounds]:
        total = torch.zeros_like(global_weights)
        examples = 0
        for client in cohort:
            # A copy: vector_to_parameters makes the parameters views of the vector it is given.
            vector_to_parameters(global_weights.clone(), model.parameters())
            train_locally(
                model,
                xs[client],
                ys[client],
                epochs=workload.epochs,
                batch_size=workload.batch_size,
                lr=workload.lr,
                generator=generator,
            )
            total += len(ys[client]) * parameters_to_vector(model.parameters()).detach()
            examples += len(ys[client])
        global_weights = total / examples
        vector_to_parameters(global_weights, model.parameters())
        final_accuracy = accuracy(model, test_x, test_y)
        timeline.end_round()
    write_result(args.result, timeline, final_accuracy)


if __name__ == "__main__":
    main()
