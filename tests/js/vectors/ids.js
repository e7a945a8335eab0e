'use strict'
// Node ids, the hyperdht command namespaces, announce tokens and the hash helpers.
const c = require('compact-encoding')
const sodium = require('sodium-universal')
const crypto = require('hypercore-crypto')
const peer = require('dht-rpc/lib/peer')
const { NS, COMMANDS, BOOTSTRAP_NODES } = require('hyperdht/lib/constants')
const { hex, blake2b, run, check } = require('./lib')

run(async () => {
  // A node id is BLAKE2b-256 of its compact-encoded IPv4 address.
  const nodeId = {}
  const addrs = [
    ['127.0.0.1', 49737], ['127.0.0.2', 49737], ['88.99.3.86', 49737],
    ['142.93.90.113', 49737], ['138.68.147.8', 49737], ['10.0.0.1', 1]
  ]
  for (const [host, port] of addrs) {
    const preimage = c.encode(c.ipv4Address, { host, port })
    const id = peer.id(host, port)
    check(id.equals(blake2b(preimage)), 'dht-rpc id = hash(address)')
    nodeId[host + ':' + port] = { preimage: hex(preimage), id: hex(id) }
  }

  // Namespaces: NS[name] = BLAKE2b-256(BLAKE2b-256("hyperswarm/dht") || command byte).
  const base = blake2b(Buffer.from('hyperswarm/dht'))
  const ns = {}
  for (const name of Object.keys(NS)) {
    const mine = blake2b(Buffer.concat([base, Buffer.from([COMMANDS[name]])]))
    check(mine.equals(NS[name]), 'namespace ' + name)
    ns[name] = { commandByte: COMMANDS[name], hex: hex(NS[name]) }
  }
  check(crypto.namespace('hyperswarm/dht', [4])[0].equals(NS.ANNOUNCE), 'hypercore-crypto namespace')

  // Tokens: keyed BLAKE2b-256 of the host string (no port); a rotation hashes the secret.
  const secret = Buffer.alloc(32, 0x42)
  const token = {
    secret: hex(secret),
    host: '127.0.0.1',
    token: hex(blake2b(Buffer.from('127.0.0.1'), secret)),
    token_for_127_0_0_2: hex(blake2b(Buffer.from('127.0.0.2'), secret)),
    rotatedSecret: hex(blake2b(secret))
  }

  const batch = Buffer.alloc(32)
  sodium.crypto_generichash_batch(batch, [Buffer.from('ab'), Buffer.from('cd')])

  return {
    nodeId,
    namespaceBase: hex(base),
    NS: ns,
    token,
    findPeerTarget_pk_0x01: hex(blake2b(Buffer.alloc(32, 1))),
    immutableTarget_hello: hex(blake2b(Buffer.from('hello'))),
    batchEqualsConcat: batch.equals(blake2b(Buffer.from('abcd'))),
    bootstrapNodes: BOOTSTRAP_NODES
  }
})
