'use strict'
// compact-encoding primitives and the address codecs dht-rpc builds its messages from.
const c = require('compact-encoding')
const net = require('compact-encoding-net')
const { hex, run } = require('./lib')

run(async () => {
  const e = (codec, value) => hex(c.encode(codec, value))
  const uint = {}
  const edges = [0, 1, 252, 253, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER]
  for (const n of edges) uint[n] = e(c.uint, n)
  const v6 = { host: '2001:db8::ff00:42:8329', port: 443 }
  return {
    uint,
    uint16_49737: e(c.uint16, 49737),
    uint32_1000: e(c.uint32, 1000),
    int: { '-2': e(c.int, -2), '-1': e(c.int, -1), 1: e(c.int, 1) },
    buffer_abc: e(c.buffer, Buffer.from('abc')),
    buffer_empty: e(c.buffer, Buffer.alloc(0)),
    optionalBuffer_null: e(c.optionalBuffer, null),
    string_hello: e(c.string, 'hello'),
    string_utf8: e(c.string, 'h\u00e9llo'),
    bool_true: e(c.bool, true),
    fixed32_0x11: e(c.fixed32, Buffer.alloc(32, 0x11)),
    array_uint: e(c.array(c.uint), [1, 300, 70000]),
    array_empty: e(c.array(c.uint), []),
    ipv4Array_two: e(c.array(c.ipv4Address), [{ host: '1.2.3.4', port: 1 }, { host: '5.6.7.8', port: 65535 }]),
    ipv4Address_127_0_0_1_49737: e(c.ipv4Address, { host: '127.0.0.1', port: 49737 }),
    ipv4Address_88_99_3_86_49737: e(c.ipv4Address, { host: '88.99.3.86', port: 49737 }),
    net_ipv4Address_same: e(net.ipv4Address, { host: '127.0.0.1', port: 49737 }),
    ipv6Address_loopback: e(c.ipv6Address, { host: '::1', port: 49737 }),
    ipv6Address_2001db8: e(c.ipv6Address, v6),
    ipv6Address_decoded: c.decode(c.ipv6Address, c.encode(c.ipv6Address, v6)),
    ipAddress_v4: e(c.ipAddress, { host: '10.0.0.1', port: 80 }),
    ipAddress_v6: e(c.ipAddress, { host: '::1', port: 80 })
  }
})
