'use strict'
// hyperdht records: peer records, signed announces and unannounces, lookup replies, mutable
// and immutable values, from a key pair derived from a fixed seed.
const c = require('compact-encoding')
const sodium = require('sodium-universal')
const DHT = require('hyperdht')
const m = require('hyperdht/lib/messages')
const Persistent = require('hyperdht/lib/persistent')
const { NS } = require('hyperdht/lib/constants')
const peerId = require('dht-rpc/lib/peer').id
const { hex, blake2b, run, check } = require('./lib')

const signWith = (kp, msg) => {
  const sig = Buffer.alloc(64)
  sodium.crypto_sign_detached(sig, msg, kp.secretKey)
  return sig
}

run(async () => {
  const seed = Buffer.alloc(32, 1)
  const kp = DHT.keyPair(seed)
  const relays = [{ host: '1.2.3.4', port: 5678 }, { host: '127.0.0.1', port: 49737 }]
  const record = { publicKey: kp.publicKey, relayAddresses: relays }
  const recordBytes = c.encode(m.peer, record)

  // ANNOUNCE: the signature covers NS.ANNOUNCE || H(target || node id || token || peer || refresh).
  const target = blake2b(Buffer.from('my topic'))
  const token = Buffer.alloc(32, 0xaa)
  const nodeId = peerId('127.0.0.1', 49737)
  const ann = { peer: record, refresh: null, signature: null, bump: 0 }
  ann.signature = Persistent.signAnnounce(target, token, nodeId, ann, kp)
  const innerHashInput = Buffer.concat([target, nodeId, token, recordBytes])
  const innerHash = blake2b(innerHashInput)
  const signable = Buffer.concat([NS.ANNOUNCE, innerHash])
  check(signWith(kp, signable).equals(ann.signature), 'announce signable')

  // UNANNOUNCE signs the record without relay addresses.
  const unann = { peer: { publicKey: kp.publicKey, relayAddresses: [] }, refresh: null, signature: null }
  unann.signature = Persistent.signUnannounce(target, token, nodeId, unann, kp)

  // LOOKUP reply with two raw peer records.
  const second = c.encode(m.peer, { publicKey: Buffer.alloc(32, 2), relayAddresses: [] })
  const lookup = c.encode(m.lookupRawReply, { peers: [recordBytes, second], bump: 0 })
  const lookupDecoded = c.decode(m.lookupRawReply, lookup)

  // MUTABLE_PUT: the signature covers NS.MUTABLE_PUT || H(uint seq || buffer value).
  const value = Buffer.from('hello world')
  const seq = 1
  const mutSignable = c.encode(m.mutableSignable, { seq, value })
  const mutSig = Persistent.signMutable(seq, value, kp)
  const mutFull = Buffer.concat([NS.MUTABLE_PUT, blake2b(mutSignable)])
  check(signWith(kp, mutFull).equals(mutSig), 'mutable signable')

  return {
    keyPair: { seed: hex(seed), publicKey: hex(kp.publicKey), secretKey: hex(kp.secretKey) },
    peerRecord: hex(recordBytes),
    peerRecord_noRelays: hex(c.encode(m.peer, { publicKey: kp.publicKey, relayAddresses: [] })),
    announce: {
      target: hex(target),
      token: hex(token),
      nodeId: hex(nodeId),
      innerHashInput: hex(innerHashInput),
      innerHash: hex(innerHash),
      signable: hex(signable),
      signature: hex(ann.signature),
      encoded: hex(c.encode(m.announce, ann)),
      encodedWithBump_1700000000000: hex(c.encode(m.announce, { ...ann, bump: 1700000000000 }))
    },
    unannounce: { signature: hex(unann.signature), encoded: hex(c.encode(m.announce, unann)) },
    lookupRawReply: hex(lookup),
    lookupRawReply_decoded: {
      peers: lookupDecoded.peers.map((p) => ({ publicKey: hex(p.publicKey), relayAddresses: p.relayAddresses })),
      bump: lookupDecoded.bump
    },
    mutable: {
      target: hex(blake2b(kp.publicKey)),
      seq,
      value: hex(value),
      mutableSignableEncoding: hex(mutSignable),
      signable: hex(mutFull),
      signature: hex(mutSig),
      putRequest: hex(c.encode(m.mutablePutRequest, { publicKey: kp.publicKey, seq, value, signature: mutSig })),
      getRequestValue_seq0: hex(c.encode(c.uint, 0)),
      getResponse: hex(c.encode(m.mutableGetResponse, { seq, value, signature: mutSig }))
    },
    immutable: { value: hex(value), target: hex(blake2b(value)) },
    pluginRequest: hex(c.encode(m.pluginRequest, { plugin: 'demo', version: 1, command: 2, value: Buffer.from('x') }))
  }
})
