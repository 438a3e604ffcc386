"""Echo ClientApp (no training) for bench/flower_deployment.py."""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Return the received arrays unchanged; FedAvg weights by num-examples."""
    content = RecordDict(
        {
            "arrays": msg.content["arrays"],
            "metrics": MetricRecord(
                {"num-examples": int(context.node_config["num-examples"])}
            ),
        }
    )
    return Message(content=content, reply_to=msg)
