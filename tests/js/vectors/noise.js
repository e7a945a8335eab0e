'use strict'
// The hyperdht Noise IK handshake between fixed key pairs (handshake.js): inputs, the four
// Diffie-Hellman results, both messages and everything derived from the handshake hash.
const c = require('compact-encoding')
const crypto = require('hypercore-crypto')
const m = require('hyperdht/lib/messages.js')
const { NS } = require('hyperdht/lib/constants.js')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const { hex, blake2b, run, check } = require('./lib')
const { handshake, clientPayload, serverPayload, curve } = require('./handshake')

run(async () => {
  const hs = handshake()
  const { clientStatic: cs, serverStatic: ss, clientEphemeral: ce, serverEphemeral: se } = hs.keys
  const f = hs.client
  check(f.tx.equals(hs.server.rx) && f.rx.equals(hs.server.tx), 'split keys agree')
  check(f.hash.equals(hs.server.hash), 'handshake hashes agree')
  const [nsInitiator, nsResponder, nsSend] = crypto.namespace('hyperswarm/secret-stream', 3)
  const idInitiator = NoiseSecretStream.id(f.hash, true)
  const idResponder = NoiseSecretStream.id(f.hash, false)
  check(idInitiator.equals(blake2b(nsInitiator, f.hash)), 'initiator stream id')
  check(f.holepunchSecret.equals(blake2b(NS.PEER_HOLEPUNCH, f.hash)), 'holepunch secret')
  const key = (kp) => ({ seed: hex(kp.seed), publicKey: hex(kp.publicKey) })
  return {
    inputs: {
      protocolName: 'Noise_IK_Ed25519_ChaChaPoly_BLAKE2b',
      prologue_NS_PEER_HANDSHAKE: hex(NS.PEER_HANDSHAKE),
      clientStatic: key(cs),
      serverStatic: key(ss),
      clientEphemeral: key(ce),
      serverEphemeral: key(se),
      clientPayloadJSON: clientPayload,
      serverPayloadJSON: serverPayload,
      clientPayloadEncoded: hex(c.encode(m.noisePayload, clientPayload)),
      serverPayloadEncoded: hex(c.encode(m.noisePayload, serverPayload))
    },
    trace: {
      m1_dh_es: hex(curve.dh(ss.publicKey, ce)),
      m1_dh_ss: hex(curve.dh(ss.publicKey, cs)),
      m2_dh_ee: hex(curve.dh(ce.publicKey, se)),
      m2_dh_se: hex(curve.dh(cs.publicKey, se))
    },
    results: {
      message1: hex(hs.message1),
      message2: hex(hs.message2),
      initiator_tx: hex(f.tx),
      initiator_rx: hex(f.rx),
      handshakeHash: hex(f.hash),
      holepunchSecret: hex(f.holepunchSecret),
      streamId_initiator: hex(idInitiator),
      streamId_responder: hex(idResponder),
      NS_SECRETSTREAM_INITIATOR: hex(nsInitiator),
      NS_SECRETSTREAM_RESPONDER: hex(nsResponder),
      NS_SECRETSTREAM_SEND: hex(nsSend),
      decodedByServer_udxId: hs.seenByServer.udx.id,
      decodedByClient_udxId: hs.seenByClient.udx.id
    }
  }
})
