# Optional handshake: the first frame of a connection from newer loggers
# (see docs/PROTOCOL.md). Its root struct has no data section, which is how the
# server tells it apart from a LoggerMsg.
@0xcf4762d38e91a0b1;

struct HelloMsg {
  fromName @0 :Text;
  fromHost @1 :Text;
  fromAddress @2 :Text;
  toAddress @3 :Text;
  fromPublicIP @4 :Text;
}
