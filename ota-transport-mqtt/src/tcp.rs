//! A [`Connector`] over tokio TCP, for host simulators and tests: the device client of
//! [`crate::device`] then runs on a host exactly as it does on a microcontroller.

use embedded_io_adapters::tokio_1::FromTokio;
use tokio::net::TcpStream;

use crate::device::Connector;

/// Dials `addr` (`host:port`) with `TCP_NODELAY`, since every chunk request is a small write.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    /// Broker address.
    pub addr: String,
}

impl TcpConnector {
    /// A connector to `host:port`.
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            addr: format!("{host}:{port}"),
        }
    }
}

impl Connector for TcpConnector {
    type Io<'a> = FromTokio<TcpStream>;
    type Error = std::io::Error;

    async fn connect(&mut self) -> Result<Self::Io<'_>, Self::Error> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(FromTokio::new(stream))
    }
}
