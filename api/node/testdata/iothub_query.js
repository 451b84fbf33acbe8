// Runs a query through the official Azure IoT service SDK for Node.js
// (npm azure-iothub), as a back end written for IoT Hub does, and prints
// the deviceId of every twin and the number of pages as JSON; with
// DEVICE_ID, also that device's identity and twin (Registry.get, getTwin);
// with NEW_ID, the registry's life cycle of a new device (create, twin
// update with its etag, a stale etag refused, list, delete); with
// METHOD_DEVICE, a direct method on that (connected) device and on one
// that is not connected; with JOB_CONDITION, a twin update job and a
// direct method job over that condition (JobClient), each followed until
// it completes.
//
//   SERVICE_CONNECTION_STRING="HostName=localhost:8443;SharedAccessKeyName=registryRead;SharedAccessKey=…"
//   NODE_EXTRA_CA_CERTS=ca.pem QUERY="SELECT * FROM devices" PAGE_SIZE=2 node iothub_query.js
const https = require('https');
const { Registry, Client, JobClient } = require('azure-iothub');

// The SDK connects to HostName on port 443, through an https.Agent it makes
// when a Registry (or Client, JobClient) is created: this one honours a
// port written in the host name.
https.Agent = class HostPortAgent extends https.Agent {
  createConnection(options, cb) {
    const m = /^(.+):(\d+)$/.exec(options.host || '');
    if (m) options = { ...options, host: m[1], port: Number(m[2]), servername: m[1] };
    return super.createConnection(options, cb);
  }
};

async function main() {
  const registry = Registry.fromConnectionString(process.env.SERVICE_CONNECTION_STRING);
  const query = registry.createQuery(process.env.QUERY, Number(process.env.PAGE_SIZE || 100));
  const ids = [];
  let pages = 0;
  while (query.hasMoreResults) {
    const { result } = await query.nextAsTwin();
    pages++;
    for (const twin of result) ids.push(twin.deviceId);
  }
  const out = { ids, pages };
  if (process.env.DEVICE_ID) {
    const { responseBody: device } = await registry.get(process.env.DEVICE_ID);
    const { responseBody: twin } = await registry.getTwin(process.env.DEVICE_ID);
    out.device = { deviceId: device.deviceId, status: device.status, primaryKey: device.authentication.symmetricKey.primaryKey };
    out.twin = { deviceId: twin.deviceId, tags: twin.tags, reported: twin.properties.reported };
  }
  if (process.env.NEW_ID) {
    const id = process.env.NEW_ID;
    const { responseBody: created } = await registry.create({ deviceId: id });
    const { responseBody: twin } = await registry.getTwin(id);
    const { responseBody: updated } = await registry.updateTwin(id,
      { tags: { site: 'sdk' }, properties: { desired: { fw: '3.0' } } }, twin.etag);
    let stale = 'accepted';
    try {
      await registry.updateTwin(id, { tags: { site: 'again' } }, twin.etag);
    } catch (e) {
      stale = e.constructor.name;
    }
    const { responseBody: listed } = await registry.list();
    await registry.delete(id);
    let afterDelete = 'found';
    try {
      await registry.get(id);
    } catch (e) {
      afterDelete = e.constructor.name;
    }
    out.lifecycle = {
      created: created.deviceId, hasKey: !!created.authentication.symmetricKey.primaryKey,
      site: updated.tags.site, fw: updated.properties.desired.fw, stale,
      listed: listed.some((d) => d.deviceId === id), afterDelete,
    };
  }
  if (process.env.METHOD_DEVICE) {
    const client = Client.fromConnectionString(process.env.SERVICE_CONNECTION_STRING);
    const call = { methodName: 'reboot', payload: { a: 1 }, responseTimeoutInSeconds: 10 };
    const { result } = await client.invokeDeviceMethod(process.env.METHOD_DEVICE, call);
    let offline = 'answered';
    try {
      await client.invokeDeviceMethod(process.env.OFFLINE_DEVICE || 'fd1', call);
    } catch (e) {
      offline = e.constructor.name;
    }
    out.method = { status: result.status, payload: result.payload, offline };
  }
  if (process.env.JOB_CONDITION) {
    const jobs = JobClient.fromConnectionString(process.env.SERVICE_CONNECTION_STRING);
    const until = async (id) => {
      for (let i = 0; i < 300; i++) {
        const { jobStatus } = await jobs.getJob(id);
        if (jobStatus.status === 'completed') return jobStatus;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('job ' + id + ' did not complete');
    };
    const twinJob = 'sdk-twin-' + Date.now();
    await jobs.scheduleTwinUpdate(twinJob, process.env.JOB_CONDITION,
      { etag: '*', tags: { rollout: 'r1' }, properties: { desired: { fw: '4.0' } } }, new Date(), 3600);
    const twin = await until(twinJob);
    const methodJob = 'sdk-method-' + Date.now();
    await jobs.scheduleDeviceMethod(methodJob, process.env.JOB_CONDITION,
      { methodName: 'reboot', payload: { at: 'now' }, responseTimeoutInSeconds: 10 });
    const method = await until(methodJob);
    let missing = 'found';
    try {
      await jobs.getJob('no-such-job');
    } catch (e) {
      missing = e.constructor.name;
    }
    out.jobs = { twin: { type: twin.type, stats: twin.deviceJobStatistics },
      method: { type: method.type, stats: method.deviceJobStatistics }, missing };
  }
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
